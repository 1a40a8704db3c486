package cpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/internal/corotest"
	"github.com/pmxcfs-go/pmxcfs/internal/cs"
	"github.com/pmxcfs-go/pmxcfs/votequorum"
)

func TestMain(m *testing.M) {
	// The helper already runs inside the test's namespaces.
	if os.Getenv(helperEnv) == "1" {
		os.Exit(orderHelper())
	}
	os.Exit(corotest.Main(m))
}

// recorder collects callbacks in delivery order.
type recorder struct {
	mu      sync.Mutex
	msgs    []Message
	confchg []ConfChg
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) callbacks() Callbacks {
	return Callbacks{
		Deliver: func(m Message) { r.mu.Lock(); r.msgs = append(r.msgs, m); r.mu.Unlock(); r.poke() },
		ConfChg: func(c ConfChg) { r.mu.Lock(); r.confchg = append(r.confchg, c); r.mu.Unlock(); r.poke() },
	}
}

func (r *recorder) poke() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// waitFor waits until cond (called under the lock) holds.
func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func start(t *testing.T, r *recorder) (*Handle, chan error) {
	t.Helper()
	h, err := Initialize(r.callbacks())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	done := make(chan error, 1)
	go func() { done <- h.Run(context.Background()) }()
	return h, done
}

// mcast sends the concatenation of parts with upstream's send policy around TryMcast, as
// the DFSM does.
func (h *Handle) mcast(ctx context.Context, parts ...[]byte) error {
	msg := bytes.Join(parts, nil)
	var err error
	_, serr := cs.Send.Run(h.conn.Log(), "cpg_send_message", cs.Sleep(ctx), func() bool {
		err = h.TryMcast(msg)
		return errors.Is(err, ErrTryAgain)
	})
	return errors.Join(err, serr)
}

func TestJoinMcastDeliver(t *testing.T) {
	corotest.Start(t, corotest.DefaultConfig())
	r := newRecorder()
	h, _ := start(t, r)
	id, err := h.LocalNodeID()
	if err != nil || id != 1 {
		t.Fatalf("LocalNodeID = %d, %v; want 1", id, err)
	}
	ctx := context.Background()
	if err := h.Join(ctx, "pve_dcdb_v1"); err != nil {
		t.Fatal(err)
	}
	pid := uint32(os.Getpid())
	r.waitFor(t, "own join", func() bool { return len(r.confchg) > 0 })
	c := r.confchg[0]
	if c.Group != "pve_dcdb_v1" || len(c.Members) != 1 || c.Members[0].NodeID != 1 || c.Members[0].PID != pid ||
		len(c.Joined) != 1 || c.Joined[0].NodeID != 1 || c.Joined[0].PID != pid || c.Joined[0].Reason != ReasonJoin || len(c.Left) != 0 {
		t.Fatalf("confchg = %+v", c)
	}

	// The name length counts the NUL: corosync-cpgtool prints the raw
	// bytes of every group name up to its length, escaping the NUL.
	out, err := exec.Command("corosync-cpgtool", "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("corosync-cpgtool: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "pve_dcdb_v1\\x00\n") {
		t.Errorf("group not listed with its NUL: %q", out)
	}

	const n = 50
	if err := h.TryMcast([]byte("hdr:0")); err != nil { // single attempt, no retry
		t.Fatal(err)
	}
	for i := 1; i < n; i++ {
		if err := h.mcast(ctx, []byte("hdr:"), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	big := bytes.Repeat([]byte{0, 1, 2, 0xff}, 256*1024) // 1 MiB: crosses libcpg's fragmentation
	if err := h.mcast(ctx, big); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "own messages", func() bool { return len(r.msgs) == n+1 })
	for i, m := range r.msgs[:n] {
		if m.Group != "pve_dcdb_v1" || m.NodeID != 1 || m.PID != pid || string(m.Data) != fmt.Sprintf("hdr:%d", i) {
			t.Fatalf("message %d = %+v", i, m)
		}
	}
	if !bytes.Equal(r.msgs[n].Data, big) {
		t.Fatal("1 MiB message corrupted")
	}

	if err := h.Leave(ctx, "pve_dcdb_v1"); err != nil {
		t.Fatal(err)
	}
}

// The totem membership callback reports the ring id that quorum notifications carry, so a
// delivery can be tied to the quorum of its ring.
func TestTotemConfChgCarriesTheQuorumRing(t *testing.T) {
	corotest.Start(t, corotest.DefaultConfig())
	notes := make(chan votequorum.Notification, 16)
	q, err := votequorum.OpenQuorum(func(n votequorum.Notification) { notes <- n })
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.TrackStart(); err != nil {
		t.Fatal(err)
	}
	go q.Run(context.Background())

	r := newRecorder()
	var totem []TotemConfChg
	cb := r.callbacks()
	cb.TotemConfChg = func(c TotemConfChg) { r.mu.Lock(); totem = append(totem, c); r.mu.Unlock(); r.poke() }
	h, err := Initialize(cb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	go h.Run(context.Background())
	if err := h.Join(context.Background(), "pve_dcdb_v1"); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "own join and the initial totem membership", func() bool { return len(r.confchg) > 0 && len(totem) > 0 })
	tc := totem[0]
	if tc.RingSeq == 0 || len(tc.Members) != 1 || tc.Members[0] != 1 {
		t.Fatalf("totem confchg = %+v", tc)
	}
	var n votequorum.Notification
	select {
	case n = <-notes:
	case <-time.After(10 * time.Second):
		t.Fatal("no quorum notification")
	}
	if n.RingSeq != tc.RingSeq {
		t.Fatalf("quorum notification for ring %d, totem membership ring %d", n.RingSeq, tc.RingSeq)
	}
}

const (
	helperEnv   = "PMXCFS_CPG_TEST_HELPER"
	orderGroup  = "pve_kvstore_v1"
	orderCount  = 200
	helperIndex = 1
)

// orderHelper is the second group member, run as a child process (corosync
// refuses a second member with the same nodeid and pid): it sends its
// messages once both members are in and prints every delivered message.
func orderHelper() int {
	r := newRecorder()
	h, err := Initialize(r.callbacks())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go h.Run(context.Background())
	ctx := context.Background()
	if err := h.Join(ctx, orderGroup); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := sendAndCollect(ctx, h, r, helperIndex); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, m := range r.msgs {
		fmt.Printf("%s\n", m.Data)
	}
	h.Close()
	return 0
}

// sendAndCollect waits for two members, sends orderCount messages tagged
// with index and waits until both members' messages arrived.
func sendAndCollect(ctx context.Context, h *Handle, r *recorder, index int) error {
	until := func(cond func() bool) error {
		deadline := time.After(20 * time.Second)
		for {
			r.mu.Lock()
			ok := cond()
			r.mu.Unlock()
			if ok {
				return nil
			}
			select {
			case <-r.changed:
			case <-deadline:
				return errors.New("timeout")
			}
		}
	}
	if err := until(func() bool { return len(r.confchg) > 0 && len(r.confchg[len(r.confchg)-1].Members) == 2 }); err != nil {
		return fmt.Errorf("waiting for 2 members: %w", err)
	}
	for j := range orderCount {
		if err := h.mcast(ctx, fmt.Appendf(nil, "%d-%d", index, j)); err != nil {
			return err
		}
	}
	if err := until(func() bool { return len(r.msgs) == 2*orderCount }); err != nil {
		return fmt.Errorf("waiting for messages: %w", err)
	}
	return nil
}

func TestTwoMembersSeeSameTotalOrder(t *testing.T) {
	corotest.Start(t, corotest.DefaultConfig())
	ctx := context.Background()
	r := newRecorder()
	h, _ := start(t, r)
	if err := h.Join(ctx, orderGroup); err != nil {
		t.Fatal(err)
	}
	// One process cannot be a member twice.
	h2, _ := start(t, newRecorder())
	if err := h2.Join(ctx, orderGroup); !errors.Is(err, cs.ErrExist) {
		t.Errorf("second join from the same pid: %v, want CS_ERR_EXIST", err)
	}

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), helperEnv+"=1")
	var out bytes.Buffer
	child.Stdout, child.Stderr = &out, os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	if err := sendAndCollect(ctx, h, r, 0); err != nil {
		child.Process.Kill()
		child.Wait()
		t.Fatal(err)
	}
	if err := child.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	theirs := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(theirs) != 2*orderCount {
		t.Fatalf("helper saw %d messages", len(theirs))
	}
	next := [2]int{}
	senders := map[uint32]bool{}
	for k, m := range r.msgs {
		if string(m.Data) != theirs[k] {
			t.Fatalf("order differs at %d: %q vs %q", k, m.Data, theirs[k])
		}
		senders[m.PID] = true
		var i, j int
		fmt.Sscanf(string(m.Data), "%d-%d", &i, &j)
		if j != next[i] {
			t.Fatalf("sender %d: got %d, want %d (FIFO per sender)", i, j, next[i])
		}
		next[i]++
	}
	if len(senders) != 2 || !senders[uint32(os.Getpid())] || !senders[uint32(child.Process.Pid)] {
		t.Errorf("sender pids %v", senders)
	}

	// The helper's exit shows up as a membership change.
	r.waitFor(t, "helper leaving", func() bool {
		c := r.confchg[len(r.confchg)-1]
		return len(c.Members) == 1 && len(c.Left) == 1 && c.Left[0].PID == uint32(child.Process.Pid)
	})
}

func TestCloseTwiceAndDuringRun(t *testing.T) {
	corotest.Start(t, corotest.DefaultConfig())
	ctx := context.Background()

	// Close from another goroutine while Run polls.
	h, done := start(t, newRecorder())
	if err := h.Join(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	h.Close()
	h.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after Close = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if err := h.TryMcast([]byte("x")); !errors.Is(err, cs.ErrBadHandle) {
		t.Fatalf("TryMcast on closed handle: %v", err)
	}

	// Close from inside a callback.
	var h2 *Handle
	h2, err := Initialize(Callbacks{ConfChg: func(ConfChg) { h2.Close() }})
	if err != nil {
		t.Fatal(err)
	}
	done2 := make(chan error, 1)
	go func() { done2 <- h2.Run(ctx) }()
	if err := h2.Join(ctx, "g2"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done2:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Close in callback")
	}

	// Cancelling the context stops Run.
	h3, err := Initialize(Callbacks{})
	if err != nil {
		t.Fatal(err)
	}
	defer h3.Close()
	cctx, cancel := context.WithCancel(ctx)
	done3 := make(chan error, 1)
	go func() { done3 <- h3.Run(cctx) }()
	cancel()
	select {
	case err := <-done3:
		if !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestCorosyncDiesAndComesBack(t *testing.T) {
	coro := corotest.Start(t, corotest.DefaultConfig())
	ctx := context.Background()
	r := newRecorder()
	h, done := start(t, r)
	if err := h.Join(ctx, "pve_dcdb_v1"); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "join", func() bool { return len(r.confchg) == 1 })

	coro.Kill()
	select {
	case err := <-done:
		if !errors.Is(err, cs.ErrLibrary) {
			t.Fatalf("Run after corosync died = %v, want CS_ERR_LIBRARY", err)
		}
		t.Logf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not notice corosync dying")
	}
	if err := h.TryMcast([]byte("x")); !errors.Is(err, cs.ErrLibrary) {
		t.Fatalf("TryMcast after corosync died = %v, want CS_ERR_LIBRARY", err)
	} else {
		t.Logf("TryMcast: %v", err)
	}
	h.Close()
	h.Close()

	// Without corosync, initialize fails with CS_ERR_LIBRARY.
	if _, err := Initialize(Callbacks{}); !errors.Is(err, cs.ErrLibrary) {
		t.Fatalf("Initialize without corosync = %v", err)
	}

	coro.Restart()
	r2 := newRecorder()
	h2, _ := start(t, r2)
	if err := h2.Join(ctx, "pve_dcdb_v1"); err != nil {
		t.Fatal(err)
	}
	if err := h2.mcast(ctx, []byte("again")); err != nil {
		t.Fatal(err)
	}
	r2.waitFor(t, "message after restart", func() bool { return len(r2.msgs) == 1 })
}

// BenchmarkMcastRoundTrip measures send-to-own-delivery latency through a
// real corosync.
func BenchmarkMcastRoundTrip(b *testing.B) {
	corotest.Start(b, corotest.DefaultConfig())
	got := make(chan struct{}, 1)
	h, err := Initialize(Callbacks{Deliver: func(Message) { got <- struct{}{} }})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	go h.Run(context.Background())
	ctx := context.Background()
	if err := h.Join(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 200)
	b.ResetTimer()
	for b.Loop() {
		if err := h.mcast(ctx, msg); err != nil {
			b.Fatal(err)
		}
		<-got
	}
}
