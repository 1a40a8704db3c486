// Command fsbench measures pmxcfs daemons through their real interfaces: FUSE mounts, the
// pve2 IPC socket and real corosync clusters on the test bench (tests/bench). Given an
// upstream binary as well it runs the same workloads on both, alternating which goes first,
// and prints the median of each figure side by side. It prints figures only; it asserts
// nothing.
//
//	fsbench [-bin bin/pmxcfs] [-upstream PATH] [-pairs N] [-quick] [-only REGEX]
//
// Needs root, corosync and /dev/fuse, like the cluster tests. Every workload starts fresh
// daemons on an empty database (resync: prepared ones), so no run inherits another's state.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pmxcfs-go/pmxcfs/tests/bench"
)

const usageText = `usage: fsbench [options]

Workloads (-only matches their names):
  local     local mode: create+write+close and stat+read of 1 KiB files, daemon CPU, RSS
  save      local mode: Proxmox-style saves (X.tmp.PID + rename), disk bytes per byte
  chunked   local mode: 512 KiB file in 4 KiB write() calls, time and disk bytes per byte
  ipc       local mode: GET_FS_VERSION and GET_CONFIG round trips through libqb
  floor     3 nodes, no pmxcfs: corosync CPG round trip and back-to-back sends on node 1
  cluster   3 nodes: single writer on node 1, daemon CPU, replication latency to node 2
  writers8  3 nodes: 8 concurrent writers (3+3+2)
  resync    3 nodes: node 3 joins with an empty database while 1 and 2 hold a large one;
            meanwhile a reader and a writer on nodes 1 and 2 (read latency, daemon CPU)

Local-mode workloads run in a 1-node bench without corosync (pmxcfs -f -l), so both
daemons use /etc/pve and /var/lib/pve-cluster privately. Binaries must be visible inside
the bench nodes: not under /tmp, /run, /etc or /var.

Options:
`

type side struct{ name, bin string }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		if err := runAgent(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "fsbench agent:", err)
			os.Exit(1)
		}
		return
	}
	bin := flag.String("bin", "bin/pmxcfs", "our pmxcfs binary")
	upstream := flag.String("upstream", os.Getenv("PMXCFS_UPSTREAM_BIN"), "upstream pmxcfs binary to compare with (default $PMXCFS_UPSTREAM_BIN)")
	pairs := flag.Int("pairs", 3, "runs per side (with -upstream: pairs of runs, alternating which side goes first); median reported")
	quick := flag.Bool("quick", false, "small counts and 1 pair (unless -pairs is given): a smoke run")
	only := flag.String("only", "", "run only workloads whose name matches this regular expression")
	dbtool := flag.String("dbtool", "", "pmxcfs-db binary, for building the resync database (default: pmxcfs-db beside -bin)")
	entries := flag.Int("resync-entries", 0, "entries of the resync database (default 50000, -quick 5000)")
	workDir := flag.String("dir", "", "parent of the working directory (default /root, else $TMPDIR); must be on a disk file system for the disk-bytes figures")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), usageText)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	pairsSet := false
	flag.Visit(func(f *flag.Flag) { pairsSet = pairsSet || f.Name == "pairs" })
	c := fullCounts
	if *quick {
		c = quickCounts
		if !pairsSet {
			*pairs = 1
		}
	}
	if *entries > 0 {
		c.resyncEntries = *entries
	}
	if *pairs < 1 {
		fmt.Fprintln(os.Stderr, "fsbench: -pairs must be at least 1")
		os.Exit(2)
	}
	if *dbtool == "" {
		*dbtool = filepath.Join(filepath.Dir(*bin), "pmxcfs-db")
	}
	var sel *regexp.Regexp
	if *only != "" {
		var err error
		if sel, err = regexp.Compile(*only); err != nil {
			fmt.Fprintln(os.Stderr, "fsbench: -only:", err)
			os.Exit(2)
		}
	}
	sides := []side{{"ours", *bin}}
	if *upstream != "" {
		sides = append([]side{{"upstream", *upstream}}, sides...)
	}
	for i, s := range sides {
		abs, err := filepath.Abs(s.bin)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "fsbench: %s binary: %v\n", s.name, err)
			os.Exit(2)
		}
		sides[i].bin = abs
	}
	if err := bench.Available(); err != nil {
		fmt.Fprintln(os.Stderr, "fsbench:", err)
		os.Exit(1)
	}
	if err := run(sides, c, *pairs, sel, *dbtool, *workDir); err != nil {
		fmt.Fprintln(os.Stderr, "fsbench:", err)
		os.Exit(1)
	}
}

// runner holds one run's state: the environment in use (for interrupting it) and the
// collected samples.
type runner struct {
	ctx     context.Context
	started time.Time
	samples map[string]map[string][]float64

	mu      sync.Mutex
	current *env // the bench in use, if any
}

// use makes e the bench an interrupt stops (nil: none).
func (r *runner) use(e *env) {
	r.mu.Lock()
	r.current = e
	r.mu.Unlock()
}

func run(sides []side, c counts, pairs int, sel *regexp.Regexp, dbtool, parent string) error {
	work, err := makeWorkDir(parent)
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	warnIfTmpfs(work)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	r := &runner{ctx: ctx, started: time.Now(), samples: map[string]map[string][]float64{}}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		if _, ok := <-sig; !ok {
			return
		}
		fmt.Fprintln(os.Stderr, "fsbench: interrupted, cleaning up")
		r.mu.Lock()
		stop()
		if r.current != nil {
			r.current.interrupt()
		}
		r.mu.Unlock()
		<-sig
		fmt.Fprintf(os.Stderr, "fsbench: interrupted again, leaving; remove what is left with: go run ./tests/bench/cmd -dir %s/{local,cluster} down\n", work)
		os.Exit(1)
	}()

	resync := &resyncData{work: filepath.Join(work, "resync"), dbtool: dbtool, entries: c.resyncEntries}
	var chosen []workload
	for _, w := range workloads(c, resync) {
		if sel == nil || sel.MatchString(w.name) {
			chosen = append(chosen, w)
		}
	}
	if len(chosen) == 0 {
		return fmt.Errorf("no workload matches -only")
	}
	for _, w := range chosen {
		if w.name == "resync" {
			if _, err := os.Stat(dbtool); err != nil {
				return fmt.Errorf("resync needs pmxcfs-db (-dbtool): %w", err)
			}
		}
	}
	var names []string
	for _, s := range sides {
		names = append(names, s.name+"="+s.bin)
	}
	fmt.Fprintf(os.Stderr, "fsbench: %d pair(s), %s\n", pairs, strings.Join(names, " "))
	var runErr error
	for _, cluster := range []bool{false, true} {
		var group []workload
		for _, w := range chosen {
			if w.cluster == cluster {
				group = append(group, w)
			}
		}
		if len(group) == 0 {
			continue
		}
		if runErr = r.runGroup(work, cluster, group, sides, pairs); runErr != nil {
			break
		}
	}

	var rows []row
	for _, w := range chosen {
		for _, f := range w.figures {
			if s := r.samples[f.key]; s != nil {
				rows = append(rows, row{fig: f, upstream: median(s["upstream"]), ours: median(s["ours"])})
			}
		}
	}
	if len(rows) > 0 {
		what := fmt.Sprintf("median of %d run(s) per side", pairs)
		if runErr != nil {
			what = "INCOMPLETE, stopped by an error"
		}
		fmt.Printf("\npmxcfs side by side: %s, same machine, same run (%s)\n\n", what, time.Since(r.started).Round(time.Second))
		fmt.Print(formatTable(rows))
		fmt.Println("\nours/upstream above 1 is better where higher is better, below 1 where lower is. The floor rows")
		fmt.Println("involve no pmxcfs: their two columns were measured in each side's turn, so their ratio shows noise.")
	}
	return runErr
}

// runGroup brings up one bench (local: 1 node without corosync; cluster: 3 nodes) and runs
// each workload pairs times per side, alternating the side that goes first.
func (r *runner) runGroup(work string, cluster bool, group []workload, sides []side, pairs int) error {
	nodes, name := 1, "local"
	if cluster {
		nodes, name = 3, "cluster"
	}
	fmt.Fprintf(os.Stderr, "[%s] %s bench: starting %d node(s)\n", r.elapsed(), name, nodes)
	var share []string
	for _, s := range sides {
		share = append(share, filepath.Dir(s.bin))
	}
	e, err := newEnv(filepath.Join(work, name), nodes, !cluster, share)
	if err != nil {
		return fmt.Errorf("%s bench: %w", name, err)
	}
	r.use(e)
	defer func() {
		r.use(nil)
		e.close()
	}()
	if r.ctx.Err() != nil {
		return r.ctx.Err()
	}
	for _, w := range group {
		for p := range pairs {
			order := sides
			if p%2 == 1 && len(sides) == 2 {
				order = []side{sides[1], sides[0]}
			}
			for _, s := range order {
				if r.ctx.Err() != nil {
					return r.ctx.Err()
				}
				res, err := w.run(e, s.bin)
				if r.ctx.Err() != nil {
					return r.ctx.Err()
				}
				if err != nil {
					return fmt.Errorf("%s (%s, pair %d): %w", w.name, s.name, p+1, err)
				}
				r.record(w, s, p, pairs, res)
			}
		}
	}
	return e.stopAll()
}

func (r *runner) record(w workload, s side, p, pairs int, res map[string]float64) {
	var parts []string
	for _, f := range w.figures {
		v, ok := res[f.key]
		if !ok {
			continue
		}
		if r.samples[f.key] == nil {
			r.samples[f.key] = map[string][]float64{}
		}
		r.samples[f.key][s.name] = append(r.samples[f.key][s.name], v)
		parts = append(parts, f.key+"="+formatValue(v))
	}
	fmt.Fprintf(os.Stderr, "[%s] %s %d/%d %s: %s\n", r.elapsed(), w.name, p+1, pairs, s.name, strings.Join(parts, " "))
}

func (r *runner) elapsed() string {
	d := time.Since(r.started).Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

// makeWorkDir makes the run's directory; the bench refuses /etc, /var and /run, and
// /root is on disk on most hosts, where /tmp may be a tmpfs.
func makeWorkDir(parent string) (string, error) {
	if parent != "" {
		return os.MkdirTemp(parent, "pmxcfs-fsbench-")
	}
	if dir, err := os.MkdirTemp("/root", "pmxcfs-fsbench-"); err == nil {
		return dir, nil
	}
	return os.MkdirTemp("", "pmxcfs-fsbench-")
}

func warnIfTmpfs(dir string) {
	var st syscall.Statfs_t
	const tmpfsMagic = 0x01021994
	if syscall.Statfs(dir, &st) == nil && st.Type == tmpfsMagic {
		fmt.Fprintf(os.Stderr, "fsbench: warning: %s is on tmpfs, where nothing counts as written to disk; the disk-bytes figures read 0 (use -dir)\n", dir)
	}
}
