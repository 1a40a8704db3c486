package clusterlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"testing"
)

// oracle hashes from testdata/upstream-ring.txt (upstream logger.c run on the same
// scenarios as below, with a zeroed entry buffer)
func ringOracle(t *testing.T) map[string][2]string {
	m := map[string][2]string{}
	for _, r := range readOracle(t, "upstream-ring.txt") {
		m[r[0]] = [2]string{r[1], r[2]}
	}
	return m
}

func checkHash(t *testing.T, o map[string][2]string, name string, b []byte) {
	t.Helper()
	sum := sha256.Sum256(b)
	want, ok := o[name]
	if !ok {
		t.Fatalf("no oracle value %s", name)
	}
	if got := hex.EncodeToString(sum[:]); got != want[0] || strconv.Itoa(len(b)) != want[1] {
		t.Errorf("%s: sha %s len %d, upstream %s len %s", name, got, len(b), want[0], want[1])
	}
}

type packer struct{ uid uint32 }

func (p *packer) put(t *testing.T, l *Log, node, ident, tag string, pid, tm uint32, prio uint8, msg string) Entry {
	t.Helper()
	p.uid++
	e, err := Pack(p.uid, node, ident, tag, pid, tm, prio, msg)
	if err != nil {
		t.Fatal(err)
	}
	l.Insert(e)
	return e
}

// A port of upstream's logtest2 (wrap-around into overwritten entries) plus further
// wraps with varying sizes, checked against upstream's bytes.
func TestWrapAroundUpstream(t *testing.T) {
	o := ringOracle(t)
	l := New(nil)
	var p packer
	const t0 = 1700000000
	p.put(t, l, "testnode", "root", "cluster", 4242, t0, 6, "starting cluster log")
	a := string(bytes.Repeat([]byte("a"), 639))
	for i := 0; i < 184; i++ {
		p.put(t, l, "testnode", "root", "cluster", 4242, t0, 6, a)
	}
	for i := 0; i < 1629; i++ {
		p.put(t, l, "testnode", "root", "cluster", 4242, t0, 6, "short")
	}
	checkHash(t, o, "wrap_raw", l.ring)
	checkHash(t, o, "wrap_dump", l.DumpJSON("", 8192))
	checkHash(t, o, "wrap_dump50", l.DumpJSON("", 50))
	checkHash(t, o, "wrap_state", l.State())
	checkHash(t, o, "wrap_dump_sorted", l.DumpJSON("", 8192))
	for i := 0; i < 3000; i++ {
		m := bytes.Repeat([]byte{byte('b' + i%20)}, (i*37)%1100)
		ident := "root@pam"
		if i%3 == 0 {
			ident = "user1@pve"
		}
		p.put(t, l, "testnode", ident, "tag", uint32(4242+i), uint32(t0+i/7), uint8(i%8), string(m))
	}
	checkHash(t, o, "wrap2_raw", l.ring)
	checkHash(t, o, "wrap2_dump", l.DumpJSON("", 100000))
	checkHash(t, o, "wrap2_user", l.DumpJSON("user1@pve", 100000))
	checkHash(t, o, "wrap2_state", l.State())
	checkHash(t, o, "wrap2_dump_sorted", l.DumpJSON("", 100000))
}

// Three logs with duplicates, same-second entries from 13 nodes (upstream's comparator
// is not transitive there) and one wrapped ring that hits the merge size limit.
func TestMergeUpstream(t *testing.T) {
	o := ringOracle(t)
	var p packer
	logs := []*Log{New(nil), New(nil), New(nil)}
	const t0 = 1700000000
	for i := 0; i < 400; i++ {
		k := (i * 7919) % 400
		p.uid++
		e, _ := Pack(p.uid, fmt.Sprintf("node%d", k%13), "root@pam", "merge", uint32(100+k), uint32(t0+k%5), uint8(k%8), fmt.Sprintf("message %d from %d", i, k))
		logs[i%3].Insert(e)
		if i%4 == 0 {
			logs[(i+1)%3].Insert(e)
		}
	}
	big := string(bytes.Repeat([]byte("z"), 1999))
	for i := 0; i < 80; i++ {
		p.put(t, logs[1], "bignode", "root", "big", 7, uint32(t0+10+i), 6, big)
	}
	var states [][]byte
	for i, l := range logs {
		checkHash(t, o, fmt.Sprintf("merge_in%d", i), l.DumpJSON("", 100000))
		s := l.State()
		checkHash(t, o, fmt.Sprintf("merge_s%d", i), s)
		states = append(states, s)
	}
	if err := logs[0].Merge(states, 0); err != nil {
		t.Fatal(err)
	}
	checkHash(t, o, "merge_res_raw", logs[0].ring)
	checkHash(t, o, "merge_res", logs[0].DumpJSON("", 100000))
	// the rebuilt dedup table refuses an older entry of node3 and takes a newer one
	if old := p.put(t, logs[0], "node3", "root", "x", 1, t0, 6, "old"); logs[0].dedup[old.NodeDigest].time == t0 {
		// node3 has entries up to t0+4 in the merged log
		t.Error("dedup not rebuilt")
	}
	p.put(t, logs[0], "node3", "root", "x", 1, t0+100, 6, "new")
	checkHash(t, o, "merge_after", logs[0].DumpJSON("", 5))
	checkHash(t, o, "merge_after_state", logs[0].State())
}

func TestInsertDedup(t *testing.T) {
	l := New(nil)
	e1, _ := Pack(5, "n1", "root", "t", 1, 100, 6, "a")
	if !l.Insert(e1) || l.Insert(e1) {
		t.Fatal("same entry inserted twice")
	}
	older, _ := Pack(4, "n1", "root", "t", 1, 100, 6, "b")
	if l.Insert(older) {
		t.Fatal("older uid at same time inserted")
	}
	earlier, _ := Pack(9, "n1", "root", "t", 1, 99, 6, "c")
	if l.Insert(earlier) {
		t.Fatal("earlier time inserted")
	}
	other, _ := Pack(1, "n2", "root", "t", 1, 50, 6, "d")
	if !l.Insert(other) {
		t.Fatal("other node refused")
	}
	newer, _ := Pack(1, "n1", "root", "t", 1, 101, 6, "e")
	if !l.Insert(newer) {
		t.Fatal("newer refused")
	}
}

func TestMergeInputs(t *testing.T) {
	l := New(nil)
	l.Add("n1", "root", "cluster", 1, 1000, 6, "starting cluster log")
	if err := l.Merge([][]byte{nil}, 0); err == nil {
		t.Fatal("single state accepted")
	}
	other := New(nil)
	other.Add("n2", "root", "cluster", 2, 1001, 6, "hi")
	st := other.State()
	// missing, wrong size field and short states count as missing, not as errors
	bad := append([]byte{}, st...)
	bad[0] ^= 1
	if err := l.Merge([][]byte{nil, st, bad, st[:8], nil}, 0); err != nil {
		t.Fatal(err)
	}
	want := "{\n\"data\": [\n" +
		`{"uid": 1, "time": 1001, "pri": 6, "tag": "cluster", "pid": 2, "node": "n2", "user": "root", "msg": "hi"},` + "\n" +
		`{"uid": 1, "time": 1000, "pri": 6, "tag": "cluster", "pid": 1, "node": "n1", "user": "root", "msg": "starting cluster log"}` +
		"\n]\n}\n"
	if got := string(l.DumpJSON("", 50)); got != want {
		t.Fatalf("got %q", got)
	}
	if got := string(New(nil).DumpJSON("", 50)); got != "{\n\"data\": [\n]\n}\n" {
		t.Fatalf("empty dump %q", got)
	}
	st2 := New(nil).State()
	if len(st2) != DefaultRingSize || ring(st2).sizeField() != DefaultRingSize || ring(st2).cpos() != 0 {
		t.Fatal("empty state")
	}
}

func TestJSONEscaping(t *testing.T) {
	e := Entry{UID: 1, Time: 2, Priority: 3, PID: 4, Node: `n"1\`, Ident: "u\x01", Tag: "t\xff",
		Msg: `a\b \"q\" \u00e4 \\" "raw" ` + "\x02"}
	got := string(appendEntryJSON(nil, &e))
	want := `{"uid": 1, "time": 2, "pri": 3, "tag": "t?", "pid": 4, "node": "n\"1\\", "user": "u\u0001", "msg": "a\\b \"q\" \u00e4 \\\" \"raw\" \u0002"}`
	if got != want {
		t.Fatalf("\n got %s\nwant %s", got, want)
	}
}
