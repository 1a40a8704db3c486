// Package wiretrace reads the CPG wire traces of upstream daemons
// (upstream-9.1.6-wire/node<N>.jsonl.gz of the fixtures outside the repository, see
// internal/fixtures; its README.md documents the format) for the tests that use them as
// their oracle. Those tests are skipped when the fixtures are absent.
package wiretrace

import (
	"bufio"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/pmxcfs-go/pmxcfs/internal/fixtures"
)

// Member is one CPG member in a configuration change.
type Member struct {
	NodeID uint32 `json:"nodeid"`
	PID    uint32 `json:"pid"`
	Reason int    `json:"reason"`
}

// Event is one line of a trace: a message sent or delivered, or a configuration change.
type Event struct {
	Seq     int      `json:"seq"`
	RtNs    int64    `json:"rt_ns"`
	Proc    uint32   `json:"proc"`
	Ev      string   `json:"ev"`
	Handle  string   `json:"handle"`
	Group   string   `json:"group"`
	NodeID  uint32   `json:"nodeid"`
	PID     uint32   `json:"pid"`
	Iov     []int    `json:"iov"`
	Len     int      `json:"len"`
	Data    string   `json:"data"`
	Members []Member `json:"members"`
	Left    []Member `json:"left"`
	Joined  []Member `json:"joined"`
	Bytes   []byte   `json:"-"` // Data decoded
}

// Dir returns the trace directory, skipping the test when the fixtures are absent.
func Dir(t testing.TB) string {
	return fixtures.Path(t, "upstream-9.1.6-wire")
}

// Read returns the events of one node's trace ("node1"...), only those of group unless it
// is empty. It skips the test when the fixtures are absent.
func Read(t testing.TB, node, group string) []Event {
	t.Helper()
	path := filepath.Join(Dir(t), node+".jsonl.gz")
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		t.Skipf("upstream wire trace %s not available (see package internal/fixtures)", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var evs []Event
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if group != "" && ev.Group != group {
			continue
		}
		if ev.Bytes, err = hex.DecodeString(ev.Data); err != nil {
			t.Fatalf("%s seq %d: %v", path, ev.Seq, err)
		}
		evs = append(evs, ev)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return evs
}
