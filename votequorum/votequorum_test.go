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

// quorumtool reads a "Label: value" number from `corosync-quorumtool -s`,
// the independent oracle for what votequorum reports.
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

func TestQuorumAndVotes(t *testing.T) {
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
	if ok, err := q.Quorate(); err != nil || !ok {
		t.Fatalf("Quorate() = %v, %v", ok, err)
	}

	v, err := OpenVoteQuorum()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	info, err := v.GetInfo(LocalNode)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", info)
	if info.NodeID != 1 || info.Votes != 2 || info.State != NodeMember || info.Flags&FlagQuorate == 0 ||
		info.ExpectedVotes != quorumtool(t, "Expected votes") || info.TotalVotes != quorumtool(t, "Total votes") ||
		info.Quorum != quorumtool(t, "Quorum") || info.HighestExpected != quorumtool(t, "Highest expected") {
		t.Fatalf("GetInfo = %+v", info)
	}

	// Corosync refuses an expected count that would make us inquorate.
	if err := v.SetExpected(5); !errors.Is(err, ErrInvalidParam) {
		t.Fatalf("SetExpected(5) = %v, want CS_ERR_INVALID_PARAM", err)
	}

	v.Close()
	v.Close()
	if _, err := v.GetInfo(LocalNode); !errors.Is(err, ErrBadHandle) {
		t.Fatalf("GetInfo after Close: %v", err)
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
		if !errors.Is(err, ErrLibrary) {
			t.Fatalf("Run = %v, want CS_ERR_LIBRARY", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not notice corosync dying")
	}
	if _, err := q.Quorate(); !errors.Is(err, ErrLibrary) {
		t.Fatalf("Quorate after kill: %v", err)
	}
	if _, err := OpenQuorum(nil); !errors.Is(err, ErrLibrary) {
		t.Fatalf("OpenQuorum without corosync: %v", err)
	}
	if _, err := OpenVoteQuorum(); !errors.Is(err, ErrLibrary) {
		t.Fatalf("OpenVoteQuorum without corosync: %v", err)
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

// `pvecm expected 1` on a node that lost quorum makes it quorate again.
func TestSetExpectedRestoresQuorum(t *testing.T) {
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
	v, err := OpenVoteQuorum()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.SetExpected(1); err != nil {
		t.Fatal(err)
	}
	n.waitFor(t, "quorate", func(x Notification) bool { return x.Quorate })
	if got := quorumtool(t, "Expected votes"); got != 1 {
		t.Fatalf("corosync-quorumtool expected votes %d", got)
	}
	info, err := v.GetInfo(LocalNode)
	if err != nil || info.ExpectedVotes != 1 || info.Quorum != 1 || info.Flags&FlagQuorate == 0 {
		t.Fatalf("GetInfo = %+v, %v", info, err)
	}
}
