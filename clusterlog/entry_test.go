package clusterlog

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The bytes upstream 9.1.6's logger.c:clog_pack produced for this input (uid 2: the second
// entry that process packed), docs/upstream-behaviour.md#cluster-log-entry.
func TestGoldenEntry(t *testing.T) {
	e, err := Pack(2, "n1", "root@pam", "cluster", 4242, 1700000000, 6, "hello \"w\" ä \\ tab\tnl\n")
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 103 {
		t.Fatalf("size %d, want 103", len(b))
	}
	want, _ := hex.DecodeString("0000000000000000020000000" + "0f15365" +
		"4082f12519cece2161bb95bf5d9af60b" + "92100000060309082300000" + "06e3100")
	if !bytes.Equal(b[:len(want)], want) {
		t.Fatalf("header\n got %x\nwant %x", b[:len(want)], want)
	}
	msg := `hello \"w\" \u00e4 \ tab#009nl#010`
	if e.Msg != msg || string(b[103-4-35:103-5]) != msg || b[103-5] != 0 {
		t.Fatalf("msg %q", e.Msg)
	}
	if !bytes.Equal(b[99:], []byte{0, 0, 0, 0}) {
		t.Fatal("trailing bytes not zero")
	}
	if e.NodeDigest != 0x21cece1925f18240 || e.IdentDigest != 0x0bf69a5dbf95bb61 {
		t.Fatalf("digests %x %x", e.NodeDigest, e.IdentDigest)
	}
	d, err := Unmarshal(b)
	if err != nil || d != e {
		t.Fatalf("round trip: %v %+v", err, d)
	}
	// upstream prints `\ ` raw (invalid JSON); we double that one backslash only
	l := New(nil)
	l.Insert(e)
	got := string(l.DumpJSON("", 50))
	wantJSON := "{\n\"data\": [\n" + `{"uid": 2, "time": 1700000000, "pri": 6, "tag": "cluster", "pid": 4242, "node": "n1", "user": "root@pam", "msg": "hello \"w\" \u00e4 \\ tab#009nl#010"}` + "\n]\n}\n"
	if got != wantJSON {
		t.Fatalf("json\n got %q\nwant %q", got, wantJSON)
	}
}

func TestUnmarshalRejects(t *testing.T) {
	e, _ := Pack(1, "n", "i", "t", 1, 1, 1, "m")
	good, _ := e.Marshal()
	cases := map[string][]byte{
		"short":     good[:47],
		"long":      append(append([]byte{}, good...), 0),
		"truncated": good[:len(good)-1],
	}
	unterm := append([]byte{}, good...)
	unterm[EntryDataOffset+1] = 'x' // node "n\0" -> "nx"
	cases["unterminated"] = unterm
	zero := append([]byte{}, good...)
	zero[37] = 0
	zero[40]++ // keep the total length right
	cases["empty field"] = zero
	for name, b := range cases {
		if _, err := Unmarshal(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Pack(1, "n", "i", "t", 1, 1, 8, "m"); err == nil {
		t.Error("priority 8 accepted")
	}
}

func readOracle(t *testing.T, name string) [][]string {
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows [][]string
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		if line := s.Text(); line != "" && line[0] != '#' {
			rows = append(rows, strings.Fields(line))
		}
	}
	return rows
}

// testdata/upstream-escape.txt: upstream utf8_to_ascii(quotequote) run on these inputs.
func TestEscapeUpstream(t *testing.T) {
	for _, r := range readOracle(t, "upstream-escape.txt") {
		in, _ := hex.DecodeString(r[0])
		bufsize, _ := strconv.Atoi(r[1])
		want := r[2]
		if want == "-" {
			want = ""
		}
		var got []byte
		for _, u := range escapeUnits(cstring(string(in)), bufsize) {
			got = append(got, u...)
		}
		if hex.EncodeToString(got) != want {
			t.Errorf("escape(%q, %d) = %q, want hex %s", in, bufsize, got, want)
		}
	}
}

// testdata/upstream-pack.txt: upstream clog_pack of long names and messages near 4096.
func TestPackUpstream(t *testing.T) {
	for i, r := range readOracle(t, "upstream-pack.txt") {
		var msg []byte
		for _, part := range strings.Split(r[3], ",") {
			u, n, _ := strings.Cut(part, "*")
			ub, _ := hex.DecodeString(u)
			cnt, _ := strconv.Atoi(n)
			msg = append(msg, bytes.Repeat(ub, cnt)...)
		}
		res := r[5:]
		e, err := Pack(uint32(i+1), r[0], r[1], r[2], 1, 1700000000, 6, string(msg))
		if err != nil {
			t.Fatal(err)
		}
		b, err := e.Marshal()
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if _, err := Unmarshal(b); err != nil {
			t.Fatalf("case %d: own entry rejected: %v", i, err)
		}
		if got := strconv.FormatUint(e.NodeDigest, 16); strings.TrimLeft(res[5], "0") != got {
			t.Errorf("case %d: node digest %s want %s", i, got, res[5])
		}
		if got := strconv.FormatUint(e.IdentDigest, 16); strings.TrimLeft(res[6], "0") != got {
			t.Errorf("case %d: ident digest %s want %s", i, got, res[6])
		}
		if res[8] == "term" {
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != res[7] || strconv.Itoa(len(b)) != res[0] {
				t.Errorf("case %d: entry differs from upstream (size %d want %s)", i, len(b), res[0])
			}
			continue
		}
		// upstream made an entry whose message lost its NUL; ours must be valid, within
		// 4096 bytes and a whole-unit prefix of the escaped message
		if len(b) > MaxEntrySize || !strings.HasPrefix(escapeAll(string(msg)), e.Msg) {
			t.Errorf("case %d: bad repair (size %d)", i, len(b))
		}
	}
}

func TestDigest(t *testing.T) {
	// FNV-1a-64 reference values
	if Digest(nil) != 0xcbf29ce484222325 || Digest([]byte("a")) != 0xaf63dc4c8601ec8c {
		t.Fatal("fnv mismatch")
	}
}

// escapeAll is the whole escaped message, as upstream's escaping with an unlimited buffer
// would give it.
func escapeAll(msg string) string {
	var out []byte
	for _, u := range escapeUnits(cstring(msg), -1) {
		out = append(out, u...)
	}
	return string(out)
}
