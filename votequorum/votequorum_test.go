package votequorum

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/internal/corotest"
	"github.com/pmxcfs-go/pmxcfs/internal/cs"
)

func TestMain(m *testing.M) { os.Exit(corotest.Main(m)) }

type notes struct {
	mu   sync.Mutex
	list []Notification
	ch   chan struct{}
}

func (n *notes) add(x Notification) {
	n.mu.Lock()
	n.list = append(n.list, x)
	n.mu.Unlock()
	select {
	case n.ch <- struct{}{}:
	default:
	}
}

func (n *notes) waitFor(t *testing.T, what string, cond func(Notification) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		n.mu.Lock()
		ok := len(n.list) > 0 && cond(n.list[len(n.list)-1])
		n.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-n.ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; got %+v", what, n.list)
		}
	}
}

// quorumtool reads a "Label: value" number from `corosync-quorumtool -s`.
func quorumtool(t *testing.T, label string) uint32 {
	t.Helper()
	out, _ := exec.Command("corosync-quorumtool", "-s").CombinedOutput()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(label) + `:\s+(\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no %q in corosync-quorumtool output:\n%s", label, out)
	}
	v, _ := strconv.ParseUint(string(m[1]), 10, 32)
	return uint32(v)
}

// quorumtoolQuorate is the "Quorate:" line of `corosync-quorumtool -s`, an oracle
// independent of libquorum's notifications.
func quorumtoolQuorate(t *testing.T) bool {
	t.Helper()
	out, _ := exec.Command("corosync-quorumtool", "-s").CombinedOutput()
	m := regexp.MustCompile(`(?m)^Quorate:\s+(\w+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no Quorate line in corosync-quorumtool output:\n%s", out)
	}
	return string(m[1]) == "Yes"
}

func TestQuorumNotifications(t *testing.T) {
	corotest.Start(t, corotest.DefaultConfig())
	n := &notes{ch: make(chan struct{}, 1)}
	q, err := OpenQuorum(n.add)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.TrackStart(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- q.Run(context.Background()) }()
	n.waitFor(t, "quorate", func(x Notification) bool { return x.Quorate && len(x.Nodes) == 1 && x.Nodes[0] == 1 })
	if !quorumtoolQuorate(t) {
		t.Fatal("corosync-quorumtool disagrees: not quorate")
	}
	q.Close()
	q.Close()
	if err := <-done; err != nil {
		t.Fatalf("Run after Close: %v", err)
	}
}

func TestCorosyncDies(t *testing.T) {
	c := corotest.Start(t, corotest.DefaultConfig())
	q, err := OpenQuorum(func(Notification) {})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.TrackStart(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- q.Run(context.Background()) }()
	c.Kill()
	select {
	case err := <-done:
		if !errors.Is(err, cs.ErrLibrary) {
			t.Fatalf("Run = %v, want CS_ERR_LIBRARY", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not notice corosync dying")
	}
	if err := q.TrackStart(); !errors.Is(err, cs.ErrLibrary) {
		t.Fatalf("TrackStart after kill: %v", err)
	}
	if _, err := OpenQuorum(nil); !errors.Is(err, cs.ErrLibrary) {
		t.Fatalf("OpenQuorum without corosync: %v", err)
	}
	c.Restart()
	q2, err := OpenQuorum(nil)
	if err != nil {
		t.Fatal(err)
	}
	q2.Close()
}

func TestNoQuorumProvider(t *testing.T) {
	cfg := corotest.DefaultConfig()
	cfg.QuorumProvider = ""
	corotest.Start(t, cfg)
	if _, err := OpenQuorum(nil); !errors.Is(err, ErrNoQuorumProvider) {
		t.Fatalf("OpenQuorum = %v, want ErrNoQuorumProvider", err)
	}
}

// A node that lost quorum hears when `pvecm expected 1` (corosync-quorumtool -e 1) makes it
// quorate again.
func TestNotifiedWhenExpectedVotesRestoreQuorum(t *testing.T) {
	cfg := corotest.DefaultConfig()
	cfg.Nodes[0].Votes = 1 // 1 of 2 votes: not quorate alone
	corotest.Start(t, cfg)
	n := &notes{ch: make(chan struct{}, 1)}
	q, err := OpenQuorum(n.add)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.TrackStart(); err != nil {
		t.Fatal(err)
	}
	go q.Run(context.Background())
	n.waitFor(t, "inquorate", func(x Notification) bool { return !x.Quorate })
	if out, err := exec.Command("corosync-quorumtool", "-e", "1").CombinedOutput(); err != nil {
		t.Fatalf("corosync-quorumtool -e 1: %v: %s", err, out)
	}
	n.waitFor(t, "quorate", func(x Notification) bool { return x.Quorate })
	if got := quorumtool(t, "Expected votes"); got != 1 {
		t.Fatalf("corosync-quorumtool expected votes %d", got)
	}
}
