package tests

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmxcfs-go/pmxcfs/tests/bench"
)

// The fault suite's load and its bookkeeping: writers that run in the test process and do
// their file system calls on a node's /etc/pve through /proc/<holder>/root (one syscall per
// operation, the errno as the kernel returns it), a ledger of every operation and what it
// promises, and the check after each step of a fault schedule.

// faultConfig sizes a fault run. `make test` runs the defaults; `make soak` raises them.
type faultConfig struct {
	rounds  int // kill -9 rounds
	cycles  int // partition/heal cycles
	writers int // writers per node during a storm
	// concurrent writers × files each, all at once on a healthy cluster
	concWriters, concFiles int
	seed                   int64
}

func loadFaultConfig(t *testing.T) faultConfig {
	t.Helper()
	c := faultConfig{
		rounds:      faultEnvInt(t, "PMXCFS_FAULT_ROUNDS", 3),
		cycles:      faultEnvInt(t, "PMXCFS_FAULT_CYCLES", 3),
		writers:     faultEnvInt(t, "PMXCFS_FAULT_WRITERS", 2),
		concWriters: 8,
		concFiles:   200,
		seed:        time.Now().UnixNano(),
	}
	if s := os.Getenv("PMXCFS_FAULT_CONCURRENT"); s != "" {
		if _, err := fmt.Sscanf(s, "%dx%d", &c.concWriters, &c.concFiles); err != nil || c.concWriters < 1 || c.concFiles < 1 {
			t.Fatalf("PMXCFS_FAULT_CONCURRENT=%q: want WRITERSxFILES, e.g. 8x200", s)
		}
	}
	if s := os.Getenv("PMXCFS_FAULT_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("PMXCFS_FAULT_SEED=%q: %v", s, err)
		}
		c.seed = v
	}
	t.Logf("fault schedule seed %d (PMXCFS_FAULT_SEED=%d repeats it); %d kill rounds, %d partition cycles, %d writers per node",
		c.seed, c.seed, c.rounds, c.cycles, c.writers)
	return c
}

func faultEnvInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		t.Fatalf("%s=%q: want a count", name, s)
	}
	return v
}

// faultOrder picks n nodes out of 1..nodes at random, in blocks that hold every node once,
// so any run of at least `nodes` steps also hits node 1 (the lowest id, which leads syncs).
func faultOrder(rng *rand.Rand, n, nodes int) []int {
	var out []int
	for len(out) < n {
		for _, k := range rng.Perm(nodes) {
			out = append(out, k+1)
		}
	}
	return out[:n]
}

// faultOp is one operation a writer did and what came back.
type faultOp struct {
	node       int
	kind       string // write, rename (write a temporary file, rename it into place), delete, probe
	path       string
	content    string
	start, end time.Time
	err        error
}

func (op *faultOp) String() string {
	res := "acknowledged"
	if op.err != nil {
		res = "refused: " + op.err.Error()
	}
	return fmt.Sprintf("%s %s on node %d (%d bytes), started %s, took %v, %s", op.kind, op.path, op.node,
		len(op.content), op.start.Format("15:04:05.000"), op.end.Sub(op.start).Round(time.Millisecond), res)
}

// errnoName names the errno behind err (EACCES, EIO, ...).
func errnoName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if n := unix.ErrnoName(errno); n != "" {
			return n
		}
		return fmt.Sprintf("errno %d", int(errno))
	}
	return "other"
}

// faultExpect is what a path must show on every node: the acknowledged operation that set it
// and whether the path exists with that operation's content or is gone.
type faultExpect struct {
	op      *faultOp
	present bool
}

// faultLedger records every operation of a run. A path's expectation is set by an
// acknowledged operation and dropped by a refused one (a refused write may or may not have
// reached the cluster, so either state is right afterwards).
type faultLedger struct {
	mu     sync.Mutex
	expect map[string]faultExpect
	// refuseFrom[node]: operations on that node that start after this moment must be refused
	// (the node is partitioned and has already refused one write).
	refuseFrom map[int]time.Time
	violations []*faultOp // acknowledged although refuseFrom said otherwise

	stepAcked   map[int]int
	stepRefused map[string]int
	stepExample map[string]*faultOp // the first refusal of each errno in the step
	acked       int
	refused     int
	lost        int
}

func newFaultLedger() *faultLedger {
	l := &faultLedger{expect: map[string]faultExpect{}, refuseFrom: map[int]time.Time{}}
	l.resetStep()
	return l
}

func (l *faultLedger) resetStep() {
	l.stepAcked = map[int]int{}
	l.stepRefused = map[string]int{}
	l.stepExample = map[string]*faultOp{}
}

// countRefusal books a refused operation; the caller holds mu.
func (l *faultLedger) countRefusal(op *faultOp) {
	name := errnoName(op.err)
	l.stepRefused[name]++
	l.refused++
	if l.stepExample[name] == nil {
		l.stepExample[name] = op
	}
}

// record books op: its count, and for an acknowledged write or delete the expectation of its
// path (present/absent); extra paths are touched by op too (the temporary file of a rename).
func (l *faultLedger) record(op *faultOp, present bool, extra ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if op.err != nil {
		l.countRefusal(op)
		delete(l.expect, op.path)
		for _, p := range extra {
			delete(l.expect, p)
		}
		return
	}
	l.stepAcked[op.node]++
	l.acked++
	if from, ok := l.refuseFrom[op.node]; ok && op.start.After(from) {
		l.violations = append(l.violations, op)
	}
	l.expect[op.path] = faultExpect{op: op, present: present}
	for _, p := range extra {
		l.expect[p] = faultExpect{op: op, present: false}
	}
}

// note counts an operation whose outcome the caller checks itself and that changes no
// expectation (a refused over-size write must leave the file as it was).
func (l *faultLedger) note(op *faultOp) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if op.err != nil {
		l.countRefusal(op)
	} else {
		l.stepAcked[op.node]++
		l.acked++
	}
}

// pin sets the expectation of op.path to op's content without counting anything.
func (l *faultLedger) pin(op *faultOp) {
	l.mu.Lock()
	l.expect[op.path] = faultExpect{op: op, present: true}
	l.mu.Unlock()
}

// stepRefusals counts the refusals of the current step.
func (l *faultLedger) stepRefusals() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.stepRefused {
		n += c
	}
	return n
}

// mustRefuse makes every operation on node that starts from now on a failure unless refused.
func (l *faultLedger) mustRefuse(node int, from time.Time) {
	l.mu.Lock()
	l.refuseFrom[node] = from
	l.mu.Unlock()
}

func (l *faultLedger) mayAccept(node int) {
	l.mu.Lock()
	delete(l.refuseFrom, node)
	l.mu.Unlock()
}

// figures is one line of counts for the step that just ended, and resets them.
func (l *faultLedger) figures(lostNow int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var nodes []int
	acked := 0
	for n, c := range l.stepAcked {
		nodes = append(nodes, n)
		acked += c
	}
	sort.Ints(nodes)
	var per []string
	for _, n := range nodes {
		per = append(per, fmt.Sprintf("node%d %d", n, l.stepAcked[n]))
	}
	var names, examples []string
	refused := 0
	for name, c := range l.stepRefused {
		names = append(names, fmt.Sprintf("%s %d", name, c))
		examples = append(examples, "\n  first "+name+": "+l.stepExample[name].String())
		refused += c
	}
	sort.Strings(names)
	sort.Strings(examples)
	l.resetStep()
	return fmt.Sprintf("acknowledged %d (%s), refused %d {%s}, lost %d | run so far: acknowledged %d, refused %d, lost %d, paths checked %d%s",
		acked, strings.Join(per, ", "), refused, strings.Join(names, ", "), lostNow, l.acked, l.refused, l.lost, len(l.expect), strings.Join(examples, ""))
}

// do runs fn as one operation of kind on path at node and records it.
func (l *faultLedger) do(node int, kind, p, content string, present bool, fn func() error, extra ...string) *faultOp {
	op := &faultOp{node: node, kind: kind, path: p, content: content, start: time.Now()}
	op.err = fn()
	op.end = time.Now()
	l.record(op, present, extra...)
	return op
}

// writeFile is what an acknowledged write means here: open, write and close all succeed.
func faultWriteFile(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// faultPveRoots maps each node to the host path of its /etc/pve.
func faultPveRoots(t *testing.T, b *bench.Bench) map[int]string {
	t.Helper()
	roots := map[int]string{}
	for i := 1; i <= b.N(); i++ {
		r, err := b.Root(i)
		if err != nil {
			t.Fatal(err)
		}
		roots[i] = r + "/etc/pve"
	}
	return roots
}

// faultWriter writes, replaces by rename and deletes files in its own directory on one node,
// as fast as the node answers, until stopped.
type faultWriter struct {
	l       *faultLedger
	node    int
	root    string // host path of the node's /etc/pve
	dir     string // relative to /etc/pve
	rng     *rand.Rand
	maxSize int
	seq     int
	present []string // acknowledged files, candidates for delete

	busySince atomic.Int64 // unix nanoseconds of the operation under way, 0 between operations
	busyWhat  atomic.Value
}

func (w *faultWriter) content(step string) string {
	head := fmt.Sprintf("%s node%d seq %d %x\n", step, w.node, w.seq, w.rng.Uint64())
	n := w.rng.Intn(w.maxSize + 1)
	if n <= len(head) {
		return head
	}
	const pad = "abcdefghijklmnopqrstuvwxyz0123456789\n"
	var s strings.Builder
	s.WriteString(head)
	for s.Len() < n {
		s.WriteString(pad)
	}
	return s.String()[:n]
}

func (w *faultWriter) busy(what string) {
	w.busyWhat.Store(what)
	w.busySince.Store(time.Now().UnixNano())
}

// one does one random operation and reports whether it was acknowledged.
func (w *faultWriter) one(step string) bool {
	w.seq++
	name := path.Join(w.dir, fmt.Sprintf("w%d.cfg", w.seq))
	host := func(p string) string { return filepath.Join(w.root, p) }
	defer w.busySince.Store(0)
	switch r := w.rng.Intn(8); {
	case r == 0 && len(w.present) > 0:
		k := w.rng.Intn(len(w.present))
		p := w.present[k]
		w.present = append(w.present[:k], w.present[k+1:]...)
		w.busy("delete " + p)
		op := w.l.do(w.node, "delete", p, "", false, func() error { return os.Remove(host(p)) })
		return op.err == nil
	case r <= 2:
		// as PVE writes its files: a temporary file, renamed into place
		tmp := name + ".tmp"
		data := w.content(step)
		w.busy("rename " + name)
		op := w.l.do(w.node, "rename", name, data, true, func() error {
			if err := faultWriteFile(host(tmp), []byte(data)); err != nil {
				return err
			}
			return os.Rename(host(tmp), host(name))
		}, tmp)
		if op.err == nil {
			w.present = append(w.present, name)
		}
		return op.err == nil
	default:
		data := w.content(step)
		w.busy("write " + name)
		op := w.l.do(w.node, "write", name, data, true, func() error { return faultWriteFile(host(name), []byte(data)) })
		if op.err == nil {
			w.present = append(w.present, name)
		}
		return op.err == nil
	}
}

// faultStorm is a set of writers that run together for one step.
type faultStorm struct {
	ws      []*faultWriter
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
}

// newFaultStorm makes perNode writers on every node, each with its own directory under tag.
func newFaultStorm(t *testing.T, b *bench.Bench, l *faultLedger, rng *rand.Rand, tag string, perNode, maxSize int) *faultStorm {
	t.Helper()
	roots := faultPveRoots(t, b)
	s := &faultStorm{}
	for i := 1; i <= b.N(); i++ {
		for k := 0; k < perNode; k++ {
			w := &faultWriter{l: l, node: i, root: roots[i], dir: fmt.Sprintf("%s/n%dw%d", tag, i, k),
				rng: rand.New(rand.NewSource(rng.Int63())), maxSize: maxSize}
			mustExec(t, b, i, "mkdir -p /etc/pve/"+w.dir)
			s.ws = append(s.ws, w)
		}
	}
	// A test that fails half-way leaves no writer running into the next test; this runs
	// before the bench goes down, which unblocks any operation still waiting on a daemon.
	t.Cleanup(func() {
		if s.stop != nil {
			s.stopped.Do(func() { close(s.stop) })
		}
	})
	return s
}

func (s *faultStorm) start(step string) {
	s.stop = make(chan struct{})
	s.stopped = sync.Once{}
	for _, w := range s.ws {
		s.wg.Add(1)
		go func(w *faultWriter) {
			defer s.wg.Done()
			for {
				select {
				case <-s.stop:
					return
				default:
				}
				if !w.one(step) {
					// a refusing node answers at once; do not spin on it
					select {
					case <-s.stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		}(w)
	}
}

// halt stops the writers and waits for the operations under way. A write that never returns
// is a defect of its own (FUSE callers must not hang), so the wait is bounded.
func (s *faultStorm) halt(t *testing.T) {
	t.Helper()
	s.stopped.Do(func() { close(s.stop) })
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		var stuck []string
		for _, w := range s.ws {
			if since := w.busySince.Load(); since != 0 {
				stuck = append(stuck, fmt.Sprintf("node %d: %v for %v", w.node, w.busyWhat.Load(), time.Since(time.Unix(0, since)).Round(time.Second)))
			}
		}
		t.Fatalf("writers do not return:\n%s", strings.Join(stuck, "\n"))
	}
}

// faultTree is one node's /etc/pve: path -> "dir" or the file's content. Generated top-level
// entries (dot files, the node's own symlinks) differ per node by design and are left out.
type faultTree map[string]string

const faultDir = "\x00dir"

func faultSnapshot(root string) (faultTree, error) {
	tree := faultTree{}
	var walk func(rel string) error
	walk = func(rel string) error {
		entries, err := os.ReadDir(filepath.Join(root, rel))
		if err != nil {
			return err
		}
		for _, e := range entries {
			p := path.Join(rel, e.Name())
			if rel == "" && (strings.HasPrefix(e.Name(), ".") || e.Type()&os.ModeSymlink != 0) {
				continue
			}
			switch {
			case e.IsDir():
				tree[p] = faultDir
				if err := walk(p); err != nil {
					return err
				}
			default:
				data, err := os.ReadFile(filepath.Join(root, p))
				if err != nil {
					return err
				}
				tree[p] = string(data)
			}
		}
		return nil
	}
	return tree, walk("")
}

func describeEntry(content string, ok bool) string {
	switch {
	case !ok:
		return "absent"
	case content == faultDir:
		return "a directory"
	case len(content) > 60:
		return fmt.Sprintf("%d bytes %q...", len(content), content[:60])
	default:
		return fmt.Sprintf("%d bytes %q", len(content), content)
	}
}

// faultSettle is the check after each step: every daemon alive, the same tree on every node,
// every acknowledged write there with its content (and every acknowledged delete gone), and
// no write acknowledged on a node that had to refuse it. It waits (bounded) for the cluster to
// converge and reports, for each lost write, what each node holds instead.
func (l *faultLedger) settle(t *testing.T, b *bench.Bench, step string) {
	t.Helper()
	for i := 1; i <= b.N(); i++ {
		if b.Pid(i, bench.Pmxcfs) == 0 {
			t.Fatalf("%s: the daemon of node %d is gone:\n%s", step, i, b.Logs(i))
		}
	}
	if err := b.WaitQuorum(quorumTimeout); err != nil {
		t.Fatalf("%s: %v", step, err)
	}
	roots := faultPveRoots(t, b)
	var trees map[int]faultTree
	var errs []string
	var missing []string
	check := func() bool {
		trees, errs, missing = map[int]faultTree{}, nil, nil
		for i := 1; i <= b.N(); i++ {
			tree, err := faultSnapshot(roots[i])
			if err != nil {
				errs = append(errs, fmt.Sprintf("node %d: %v", i, err))
			}
			trees[i] = tree
		}
		if len(errs) > 0 {
			return false
		}
		l.mu.Lock()
		for p, e := range l.expect {
			for i := 1; i <= b.N(); i++ {
				got, ok := trees[i][p]
				if ok != e.present || (ok && got != e.op.content) {
					missing = append(missing, p)
					break
				}
			}
		}
		l.mu.Unlock()
		sort.Strings(missing)
		return len(missing) == 0 && faultTreesEqual(trees)
	}
	// Converged but short of acknowledged writes, with nothing writing any more: once all nodes
	// have agreed on that for a while, waiting the full minute changes nothing.
	var agreed string
	var agreedSince time.Time
	ok := waitFor(60*time.Second, func() bool {
		if check() {
			return true
		}
		if len(errs) > 0 || !faultTreesEqual(trees) {
			agreed = ""
			return false
		}
		if now := strings.Join(missing, "\n"); now != agreed {
			agreed, agreedSince = now, time.Now()
		}
		return time.Since(agreedSince) > 5*time.Second
	})
	for i := 1; i <= b.N(); i++ {
		if b.Pid(i, bench.Pmxcfs) == 0 {
			t.Errorf("%s: the daemon of node %d died:\n%s", step, i, b.Logs(i))
		}
	}
	if len(errs) > 0 {
		t.Fatalf("%s: cannot read /etc/pve: %s", step, strings.Join(errs, "; "))
	}
	l.mu.Lock()
	for _, p := range missing {
		e := l.expect[p]
		var have []string
		for i := 1; i <= b.N(); i++ {
			got, ok := trees[i][p]
			have = append(have, fmt.Sprintf("node%d: %s", i, describeEntry(got, ok)))
		}
		want := "absent"
		if e.present {
			want = describeEntry(e.op.content, true)
		}
		t.Errorf("%s: LOST acknowledged %s\n  acknowledged state: %s\n  %s", step, e.op, want, strings.Join(have, "\n  "))
		// reported once; later steps check the remaining paths
		delete(l.expect, p)
		l.lost++
	}
	for _, op := range l.violations {
		t.Errorf("%s: a partitioned node acknowledged a write after it had refused one: %s", step, op)
	}
	l.violations = nil
	l.mu.Unlock()
	if !ok && !faultTreesEqual(trees) {
		t.Fatalf("%s: nodes still differ after 60 s:\n%s", step, faultTreeDiff(trees))
	}
	t.Logf("%s: %s", step, l.figures(len(missing)))
}

func faultTreesEqual(trees map[int]faultTree) bool {
	for i := 2; i <= len(trees); i++ {
		if len(trees[i]) != len(trees[1]) {
			return false
		}
		for p, c := range trees[1] {
			if d, ok := trees[i][p]; !ok || d != c {
				return false
			}
		}
	}
	return true
}

// faultTreeDiff lists the first paths on which nodes disagree.
func faultTreeDiff(trees map[int]faultTree) string {
	all := map[string]bool{}
	for _, tree := range trees {
		for p := range tree {
			all[p] = true
		}
	}
	var paths []string
	for p := range all {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var s strings.Builder
	shown := 0
	for _, p := range paths {
		same := true
		c1, ok1 := trees[1][p]
		for i := 2; i <= len(trees); i++ {
			if c, ok := trees[i][p]; ok != ok1 || c != c1 {
				same = false
			}
		}
		if same {
			continue
		}
		if shown++; shown > 20 {
			s.WriteString("...\n")
			break
		}
		fmt.Fprintf(&s, "%s:", p)
		for i := 1; i <= len(trees); i++ {
			c, ok := trees[i][p]
			fmt.Fprintf(&s, " node%d %s;", i, describeEntry(c, ok))
		}
		s.WriteString("\n")
	}
	return s.String()
}
