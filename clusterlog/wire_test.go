package clusterlog

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// The wire traces of three upstream 9.1.6 daemons (../shared/fixtures/upstream-9.1.6-wire,
// outside the repository; see internal/fixtures). Absent, the tests are skipped.
func wireDir(t *testing.T) string {
	dir := filepath.Join("..", "..", "shared", "fixtures", "upstream-9.1.6-wire")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("upstream wire fixtures not available at %s (see package internal/fixtures)", dir)
	}
	return dir
}

type traceEvent struct {
	Seq     int    `json:"seq"`
	Ev      string `json:"ev"`
	Group   string `json:"group"`
	Nodeid  uint32 `json:"nodeid"`
	Pid     uint32 `json:"pid"`
	Data    string `json:"data"`
	Members []struct {
		Nodeid uint32 `json:"nodeid"`
		Pid    uint32 `json:"pid"`
	} `json:"members"`
	bytes []byte
}

func readTrace(t *testing.T, dir, name string) []traceEvent {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var evs []traceEvent
	s := bufio.NewScanner(z)
	s.Buffer(nil, 1<<24)
	for s.Scan() {
		var e traceEvent
		if err := json.Unmarshal(s.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if e.Group != "pve_kvstore_v1" {
			continue
		}
		e.bytes, _ = hex.DecodeString(e.Data)
		evs = append(evs, e)
	}
	return evs
}

const (
	dfsmNormal = 0
	dfsmState  = 2
	kvLog      = 3
)

// Every cluster-log entry sent by upstream decodes and re-encodes to the same bytes
// (the 4 trailing bytes, uninitialised upstream, excepted).
func TestWireLogEntries(t *testing.T) {
	dir := wireDir(t)
	n := 0
	for _, name := range []string{"node1.jsonl.gz", "node2.jsonl.gz", "node3.jsonl.gz"} {
		for _, e := range readTrace(t, dir, name) {
			b := e.bytes
			if len(b) < 24 || binary.LittleEndian.Uint16(b) != dfsmNormal || binary.LittleEndian.Uint16(b[2:]) != kvLog {
				continue
			}
			p := b[24:]
			ent, err := Unmarshal(p)
			if err != nil {
				t.Fatalf("%s seq %d: %v", name, e.Seq, err)
			}
			if ent.NodeDigest != DigestString(ent.Node) || ent.IdentDigest != DigestString(ent.Ident) {
				t.Errorf("%s seq %d: digest mismatch", name, e.Seq)
			}
			re, _ := ent.Marshal()
			if !bytes.Equal(re[:len(re)-4], p[:len(p)-4]) {
				t.Errorf("%s seq %d: re-encoding differs", name, e.Seq)
			}
			n++
		}
	}
	if n != 6 {
		t.Errorf("found %d LOG messages, the README table gives 6 (send+deliver)", n)
	}
}

// Replays node3's KVSTORE input: its own STATEs must equal our sorted ring, each merge
// must reproduce the next ring it sent, and the final dump must equal clusterlog.json.
func TestWireReplayNode3(t *testing.T) {
	dir := wireDir(t)
	want, err := os.ReadFile(filepath.Join(dir, "clusterlog.json"))
	if err != nil {
		t.Fatal(err)
	}
	const myNode, myPid = 3, 24176
	l := New(nil)
	l.lastUID = 0
	if _, err := l.Add("node3", "root", "cluster", myPid, 1795349881, 6, "starting cluster log"); err != nil {
		t.Fatal(err)
	}
	type member struct{ node, pid uint32 }
	var members []member
	var states map[member][]byte
	sent, merged := 0, 0
	for _, e := range readTrace(t, dir, "node3.jsonl.gz") {
		switch e.Ev {
		case "confchg":
			members = members[:0]
			for _, m := range e.Members {
				members = append(members, member{m.Nodeid, m.Pid})
			}
			states = nil
		case "send":
			if binary.LittleEndian.Uint16(e.bytes) == dfsmState {
				if got := l.State(); !bytes.Equal(got, e.bytes[32:]) {
					t.Fatalf("seq %d: our state differs from the ring upstream sent", e.Seq)
				}
				sent++
			}
		case "deliver":
			switch typ := binary.LittleEndian.Uint16(e.bytes); {
			case typ == 1: // SYNC_START
				states = map[member][]byte{}
			case typ == dfsmState && states != nil:
				states[member{e.Nodeid, e.Pid}] = e.bytes[32:]
				if len(states) == len(members) {
					var list [][]byte
					local := -1
					for i, m := range members {
						list = append(list, states[m])
						if m == (member{myNode, myPid}) {
							local = i
						}
					}
					if len(list) >= 2 {
						if err := l.Merge(list, local); err != nil {
							t.Fatal(err)
						}
						merged++
					}
					states = nil
				}
			case typ == dfsmNormal && binary.LittleEndian.Uint16(e.bytes[2:]) == kvLog && e.Nodeid != myNode:
				ent, err := Unmarshal(e.bytes[24:])
				if err != nil {
					t.Fatal(err)
				}
				l.Insert(ent)
			}
		}
	}
	if sent != 4 || merged != 4 {
		t.Errorf("compared %d states and ran %d merges, want 4 and 4", sent, merged)
	}
	if got := l.DumpJSON("", 50); !bytes.Equal(got, want) {
		t.Errorf("final dump differs:\n%s\nwant\n%s", got, want)
	}
}
