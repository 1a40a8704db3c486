package status

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Feeds node3's received KVSTORE UPDATEs from the upstream wire trace
// (../shared/fixtures/upstream-9.1.6-wire, step d/e of its README; outside the repository,
// see internal/fixtures) into SetNodeStatus. Skipped when the trace is absent.
func TestWireNode3Updates(t *testing.T) {
	path := filepath.Join("..", "..", "shared", "fixtures", "upstream-9.1.6-wire", "node3.jsonl.gz")
	f, err := os.Open(path)
	if err != nil {
		t.Skipf("upstream wire trace not available: %v (see package internal/fixtures)", err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{NodeName: "node3", NodeIP: "10.94.0.3", PID: 24176})
	s.SetClusterInfo("testcluster", 1, []Node{{1, "node1", 1}, {2, "node2", 1}, {3, "node3", 1}})
	sc := bufio.NewScanner(z)
	sc.Buffer(nil, 1<<24)
	n := 0
	for sc.Scan() {
		var ev struct {
			Ev, Group, Data string
			Nodeid, Pid     uint32
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		b, _ := hex.DecodeString(ev.Data)
		if ev.Ev != "deliver" || ev.Group != "pve_kvstore_v1" || len(b) < 24+256 ||
			binary.LittleEndian.Uint16(b) != 0 || binary.LittleEndian.Uint16(b[2:]) != 1 ||
			(ev.Nodeid == 3 && ev.Pid == 24176) {
			continue
		}
		key, _, ok := bytes.Cut(b[24:24+256], []byte{0})
		if !ok {
			t.Fatal("unterminated key")
		}
		s.SetNodeStatus(ev.Nodeid, string(key), b[24+256:])
		n++
	}
	if n == 0 {
		t.Fatal("no updates found")
	}
	if v, err := s.GetStatus("node1", "kv/test"); err != nil || string(v) != "value-from-node1\x00" {
		t.Fatalf("node1 kv/test %q %v", v, err)
	}
	if v, err := s.GetStatus("node2", "kv/test"); err != nil || string(v) != "value-from-node2\x00" {
		t.Fatalf("node2 kv/test %q %v", v, err)
	}
	m := string(s.Members())
	for _, want := range []string{`"node1": { "id": 1, "online": 0, "ip": "10.94.0.101"}`, `"node2": { "id": 2, "online": 0, "ip": "10.94.0.2"}`} {
		if !strings.Contains(m, want) {
			t.Errorf(".members lacks %s:\n%s", want, m)
		}
	}
}
