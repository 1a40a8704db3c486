package tests

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/tests/bench"
)

var (
	pve2ctlOnce sync.Once
	pve2ctlPath string
	pve2ctlErr  error
)

// pve2ctl builds the test IPC client next to the pmxcfs binary, where bench nodes see it.
func pve2ctl(t *testing.T) string {
	pve2ctlOnce.Do(func() {
		pve2ctlPath = filepath.Join(filepath.Dir(pmxcfsBinary()), "pve2ctl")
		out, err := exec.Command("go", "build", "-o", pve2ctlPath, "./pve2ctl").CombinedOutput()
		if err != nil {
			pve2ctlErr = fmt.Errorf("building pve2ctl: %v\n%s", err, out)
		}
	})
	if pve2ctlErr != nil {
		t.Fatal(pve2ctlErr)
	}
	return pve2ctlPath
}

// checkStatusPlane sets a kv value and logs a cluster-log message through IPC on every node,
// then requires every node to read every node's value and to show every message exactly once
// (issue 5: status set on one kind of node is read on the other; log entries appear once on all).
func checkStatusPlane(t *testing.T, b *bench.Bench) {
	t.Helper()
	ctl := pve2ctl(t)
	stamp := fmt.Sprint(time.Now().UnixNano())
	for i := 1; i <= b.N(); i++ {
		if out, err := b.Exec(i, ctl, "set", "kv/test", fmt.Sprintf("from-%d-%s", i, stamp)); err != nil {
			t.Fatalf("node %d set: %v %s", i, err, out)
		}
		if out, err := b.Exec(i, ctl, "log", fmt.Sprintf("hello-from-%d-%s", i, stamp)); err != nil {
			t.Fatalf("node %d log: %v %s", i, err, out)
		}
	}
	for i := 1; i <= b.N(); i++ {
		for j := 1; j <= b.N(); j++ {
			want := fmt.Sprintf("from-%d-%s", j, stamp)
			var got string
			if !waitFor(10*time.Second, func() bool {
				got, _ = b.Exec(i, ctl, "get", bench.NodeName(j), "kv/test")
				return got == want
			}) {
				t.Errorf("node %d reads kv/test of %s as %q, want %q", i, bench.NodeName(j), got, want)
			}
		}
		var log string
		if !waitFor(10*time.Second, func() bool {
			log, _ = b.Exec(i, ctl, "clusterlog")
			for j := 1; j <= b.N(); j++ {
				if strings.Count(log, fmt.Sprintf("hello-from-%d-%s", j, stamp)) != 1 {
					return false
				}
			}
			return true
		}) {
			t.Errorf("node %d cluster log lacks an entry or repeats one:\n%s", i, log)
		}
	}
}
