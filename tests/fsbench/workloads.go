package main

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pmxcfs-go/pmxcfs/tests/bench"
)

// counts sizes every workload.
type counts struct {
	localFiles    int // local create+write+close and stat+read
	clusterFiles  int // 3-node single writer
	latSamples    int // replication latency samples
	writerFiles   int // files per writer, 8 concurrent writers
	saves         int // Proxmox-style saves of 4 KiB
	chunked       int // 512 KiB files written in 4 KiB chunks
	ipcCalls      int // per IPC request type
	resyncEntries int
	floorSamples  int
	floorBulk     int // messages sent back to back
}

var fullCounts = counts{localFiles: 10000, clusterFiles: 1000, latSamples: 200, writerFiles: 250, saves: 1000, chunked: 3,
	ipcCalls: 20000, resyncEntries: 50000, floorSamples: 1000, floorBulk: 20000}

var quickCounts = counts{localFiles: 1000, clusterFiles: 200, latSamples: 50, writerFiles: 25, saves: 200, chunked: 1,
	ipcCalls: 2000, resyncEntries: 5000, floorSamples: 200, floorBulk: 2000}

const (
	smallFile   = 1024
	saveFile    = 4096
	chunkedFile = 512 * 1024
	resyncFile  = 2048
)

// A workload runs on a fresh daemon (or set of daemons) of one side and returns a value for
// each of its figures.
type workload struct {
	name    string
	cluster bool // 3-node bench; otherwise a 1-node bench in local mode
	figures []figure
	run     func(e *env, bin string) (map[string]float64, error)
}

func secs(r response) float64 { return float64(r.T1-r.T0) / 1e9 }

func mib(kb uint64) float64 { return float64(kb) / 1024 }

// benchDir is where workloads write inside /etc/pve.
const benchDir = pveDir + "/bench"

func workloads(c counts, resync *resyncData) []workload {
	return []workload{
		{
			name: "local",
			figures: []figure{
				{"local.write", fmt.Sprintf("local: create+write+close 1 KiB x %d (files/s)", c.localFiles), true},
				{"local.read", "local: stat+read them (files/s)", true},
				{"local.cpu", "local: daemon CPU per created file (us)", false},
				{"local.cs", "local: daemon context switches per created file", false},
				{"local.rss", fmt.Sprintf("local: daemon RSS after %d files (MiB)", c.localFiles), false},
				{"local.hwm", "local: daemon peak RSS, VmHWM (MiB)", false},
			},
			run: func(e *env, bin string) (map[string]float64, error) {
				wr, err := writeThenRead(e, bin, c.localFiles)
				if err != nil {
					return nil, err
				}
				return map[string]float64{
					"local.write": wr.writeRate,
					"local.read":  wr.readRate,
					"local.cpu":   wr.cpuPerFile,
					"local.cs":    wr.switchesPerFile,
					"local.rss":   mib(wr.afterWrite.rssKB),
					"local.hwm":   mib(wr.afterRead.hwmKB),
				}, nil
			},
		},
		{
			name: "save",
			figures: []figure{
				{"save.rate", "local: Proxmox save, 4 KiB to X.tmp.PID + rename over X (saves/s)", true},
				{"save.disk", "local: daemon disk bytes written per byte saved (saves)", false},
			},
			run: func(e *env, bin string) (map[string]float64, error) {
				r, disk, err := measureIO(e, bin, request{Op: "save", Dir: benchDir, Prefix: "save", N: c.saves, Size: saveFile})
				if err != nil {
					return nil, err
				}
				return map[string]float64{
					"save.rate": float64(r.N) / secs(r),
					"save.disk": disk / float64(c.saves*saveFile),
				}, nil
			},
		},
		{
			name: "chunked",
			figures: []figure{
				{"chunked.time", "local: 512 KiB file in 4 KiB write() calls (ms per file)", false},
				{"chunked.disk", "local: daemon disk bytes written per byte saved (512 KiB file)", false},
			},
			run: func(e *env, bin string) (map[string]float64, error) {
				r, disk, err := measureIO(e, bin, request{Op: "chunked", Dir: benchDir, Prefix: "big", N: c.chunked, Size: chunkedFile})
				if err != nil {
					return nil, err
				}
				return map[string]float64{
					"chunked.time": secs(r) * 1000 / float64(r.N),
					"chunked.disk": disk / float64(c.chunked*chunkedFile),
				}, nil
			},
		},
		{
			name: "ipc",
			figures: []figure{
				{"ipc.version", "IPC: GET_FS_VERSION round trips/s (local mode)", true},
				{"ipc.config", "IPC: GET_CONFIG of a 1 KiB file, round trips/s (local mode)", true},
			},
			run: func(e *env, bin string) (map[string]float64, error) {
				if err := e.fresh(bin); err != nil {
					return nil, err
				}
				if _, err := e.agent(1).call(request{Op: "ready", Dir: benchDir, Name: "ipc.cfg", Content: string(content(smallFile, 0))}); err != nil {
					return nil, err
				}
				r, err := e.agent(1).call(request{Op: "ipc", Name: "bench/ipc.cfg", N: c.ipcCalls})
				if err != nil {
					return nil, err
				}
				if len(r.Rates) != 2 {
					return nil, fmt.Errorf("ipc: %d rates", len(r.Rates))
				}
				return map[string]float64{"ipc.version": r.Rates[0], "ipc.config": r.Rates[1]}, nil
			},
		},
		{
			name:    "floor",
			cluster: true,
			figures: []figure{
				{"floor.median", "floor: corosync CPG send->deliver on node 1, no pmxcfs, median (ms)", false},
				{"floor.p99", "floor: corosync CPG send->deliver, p99 (ms)", false},
				{"floor.bulk", "floor: corosync CPG, 2 KiB messages sent back to back by one process (msgs/s)", true},
				{"floor.mib", "floor: the same in MiB/s", true},
			},
			run: func(e *env, _ string) (map[string]float64, error) {
				if err := e.stopAll(); err != nil {
					return nil, err
				}
				r, err := e.agent(1).call(request{Op: "cpg", N: c.floorSamples, Bulk: c.floorBulk, Size: resyncFile, Timeout: 120})
				if err != nil {
					return nil, err
				}
				if len(r.Rates) != 1 {
					return nil, fmt.Errorf("cpg: %d rates", len(r.Rates))
				}
				return map[string]float64{
					"floor.median": median(r.Samples),
					"floor.p99":    percentile(r.Samples, 99),
					"floor.bulk":   r.Rates[0],
					"floor.mib":    r.Rates[0] * resyncFile / (1 << 20),
				}, nil
			},
		},
		{
			name:    "cluster",
			cluster: true,
			figures: []figure{
				{"cluster.write", fmt.Sprintf("3 nodes: create+write+close 1 KiB x %d on node 1 (files/s)", c.clusterFiles), true},
				{"cluster.cpu", "3 nodes: node 1 daemon CPU per created file (us)", false},
				{"cluster.cs", "3 nodes: node 1 daemon context switches per created file", false},
				{"cluster.read", "3 nodes: stat+read them on node 1 (files/s)", true},
				{"cluster.lat", "3 nodes: write on node 1 -> content visible on node 2, median (ms)", false},
				{"cluster.lat99", "3 nodes: write on node 1 -> content visible on node 2, p99 (ms)", false},
			},
			run: func(e *env, bin string) (map[string]float64, error) {
				wr, err := writeThenRead(e, bin, c.clusterFiles)
				if err != nil {
					return nil, err
				}
				lat, err := latencies(e, c.latSamples)
				if err != nil {
					return nil, err
				}
				return map[string]float64{
					"cluster.write": wr.writeRate,
					"cluster.cpu":   wr.cpuPerFile,
					"cluster.cs":    wr.switchesPerFile,
					"cluster.read":  wr.readRate,
					"cluster.lat":   median(lat),
					"cluster.lat99": percentile(lat, 99),
				}, nil
			},
		},
		{
			name:    "writers8",
			cluster: true,
			figures: []figure{
				{"writers8.rate", fmt.Sprintf("3 nodes: 8 concurrent writers (3+3+2) x %d files, total (files/s)", c.writerFiles), true},
			},
			run: func(e *env, bin string) (map[string]float64, error) {
				if err := e.fresh(bin); err != nil {
					return nil, err
				}
				workers := []int{3, 3, 2}
				rs := make([]response, len(workers))
				errs := make([]error, len(workers))
				var wg sync.WaitGroup
				for k, n := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						rs[k], errs[k] = e.agent(k + 1).call(request{Op: "write", Dir: benchDir, Prefix: fmt.Sprintf("n%dw", k+1), N: c.writerFiles, Size: smallFile, Workers: n})
					}()
				}
				wg.Wait()
				if err := errors.Join(errs...); err != nil {
					return nil, err
				}
				t0, t1, n := int64(math.MaxInt64), int64(0), 0
				for _, r := range rs {
					t0, t1, n = min(t0, r.T0), max(t1, r.T1), n+r.N
				}
				return map[string]float64{"writers8.rate": float64(n) / (float64(t1-t0) / 1e9)}, nil
			},
		},
		{
			name:    "resync",
			cluster: true,
			figures: []figure{
				{"resync.time", fmt.Sprintf("3 nodes: node 3 joins empty, nodes 1+2 hold %d entries (%s): until synced (s)", c.resyncEntries, resync.describe()), false},
				{"resync.readmax", "resync: stat+read of a file on nodes 1 and 2 meanwhile (a writer there rewrites some), max (ms)", false},
				{"resync.read99", "resync: stat+read on nodes 1 and 2 meanwhile, p99 (ms)", false},
				{"resync.idlemax", "resync: stat+read on nodes 1 and 2 in the 2 s before, max (ms)", false},
				{"resync.cpu12", "resync: CPU of the daemons of nodes 1+2 meanwhile (CPU s/s)", false},
				{"resync.idlecpu", "resync: CPU of the daemons of nodes 1+2 in the 2 s before (CPU s/s)", false},
				{"resync.cpu3", "resync: CPU of node 3's daemon until synced (s)", false},
			},
			run: func(e *env, bin string) (map[string]float64, error) { return runResync(e, bin, resync) },
		},
	}
}

type writeRead struct {
	writeRate, readRate   float64 // files/s
	cpuPerFile            float64 // node 1's daemon, while writing, in us
	switchesPerFile       float64 // node 1's daemon's context switches, while writing
	afterWrite, afterRead procSample
}

// writeThenRead starts fresh daemons, then on node 1 creates n files of 1 KiB one after the
// other and stats and reads them back.
func writeThenRead(e *env, bin string, n int) (writeRead, error) {
	var wr writeRead
	if err := e.fresh(bin); err != nil {
		return wr, err
	}
	before, err := e.proc(1)
	if err != nil {
		return wr, err
	}
	w, err := e.agent(1).call(request{Op: "write", Dir: benchDir, Prefix: "f", N: n, Size: smallFile})
	if err != nil {
		return wr, err
	}
	if wr.afterWrite, err = e.proc(1); err != nil {
		return wr, err
	}
	r, err := e.agent(1).call(request{Op: "read", Dir: benchDir, Prefix: "f", N: n, Size: smallFile})
	if err != nil {
		return wr, err
	}
	if wr.afterRead, err = e.proc(1); err != nil {
		return wr, err
	}
	wr.writeRate = float64(w.N) / secs(w)
	wr.readRate = float64(r.N) / secs(r)
	wr.cpuPerFile = cpuMicros(wr.afterWrite.cpuTicks-before.cpuTicks) / float64(w.N)
	wr.switchesPerFile = float64(wr.afterWrite.switches-before.switches) / float64(w.N)
	return wr, nil
}

// measureIO runs req on a fresh local daemon and returns its answer and the bytes the daemon
// wrote to storage meanwhile (its SQLite database, WAL and checkpoints included).
func measureIO(e *env, bin string, req request) (response, float64, error) {
	if err := e.fresh(bin); err != nil {
		return response{}, 0, err
	}
	p0, err := e.proc(1)
	if err != nil {
		return response{}, 0, err
	}
	r, err := e.agent(1).call(req)
	if err != nil {
		return response{}, 0, err
	}
	p1, err := e.proc(1)
	if err != nil {
		return response{}, 0, err
	}
	return r, float64(p1.writeBytes - p0.writeBytes), nil
}

// latencies writes n files on node 1, each while node 2 polls for it, and returns the
// times from node 1's open() to node 2 reading the full content, in ms.
func latencies(e *env, n int) ([]float64, error) {
	var lat []float64
	for i := range n {
		name := fmt.Sprintf("%s/lat%d", benchDir, i)
		value := fmt.Sprintf("v%d\n", i)
		// Polling every 0.1 ms bounds the load the poller puts on node 2's daemon (every poll
		// is a FUSE lookup) while adding at most about that much to the figure.
		if err := e.agent(2).send(request{Op: "waitfile", Name: name, Content: value, PollMS: 0.1, Timeout: 30}); err != nil {
			return nil, err
		}
		if _, err := e.agent(2).recv(); err != nil {
			return nil, err
		}
		w, err := e.agent(1).call(request{Op: "writeone", Name: name, Content: value})
		if err != nil {
			return nil, err
		}
		seen, err := e.agent(2).recv()
		if err != nil {
			return nil, err
		}
		lat = append(lat, float64(seen.T1-w.T0)/1e6)
	}
	return lat, nil
}

// resyncData is the database the resync workload starts nodes 1 and 2 with, built once per
// run.
type resyncData struct {
	work, dbtool string
	entries      int
	layout       resyncLayout
	db           string
}

func (r *resyncData) describe() string {
	l, err := planResync(r.entries, 0)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%.0f MiB", float64(len(l.files))*resyncFile/(1<<20))
}

func (r *resyncData) build(e *env) error {
	if r.db != "" {
		return nil
	}
	conf, err := os.ReadFile(filepath.Join(e.b.NodeDir(1), "etc-corosync", "corosync.conf"))
	if err != nil {
		return err
	}
	if r.layout, err = planResync(r.entries, uint32(time.Now().Unix())); err != nil {
		return err
	}
	r.db, err = buildResyncDB(r.work, r.dbtool, r.layout, resyncFile, conf)
	return err
}

func runResync(e *env, bin string, r *resyncData) (map[string]float64, error) {
	if err := r.build(e); err != nil {
		return nil, err
	}
	if err := e.stopAll(); err != nil {
		return nil, err
	}
	db, err := os.ReadFile(r.db)
	if err != nil {
		return nil, err
	}
	// Node 3 joins as a new node does: its corosync comes up with its pmxcfs. While only
	// its corosync ran, a node whose pmxcfs restarts (ours) would wait for node 3's pmxcfs
	// before accepting changes, since node 3 might hold newer data (docs/protocol.md).
	if err := e.b.Kill(3, bench.Corosync, false); err != nil {
		return nil, err
	}
	corosync3 := false
	defer func() {
		if !corosync3 {
			_ = e.b.StartCorosync(3) // the bench's later workloads expect all three
		}
	}()
	if err := e.b.WaitQuorum(60*time.Second, 1, 2); err != nil {
		return nil, err
	}
	for i := 1; i <= 2; i++ {
		if err := os.WriteFile(filepath.Join(e.dbDir(i), "config.db"), db, 0o600); err != nil {
			return nil, err
		}
		if err := e.start(i, bin); err != nil {
			return nil, err
		}
	}
	if err := e.ready(1, 2); err != nil {
		return nil, err
	}
	// Readers on the nodes that hold the data, beside a writer rewriting some of the files
	// they read: a sync must not hold up their reads. The marker stays as it is.
	var probed []string
	for k := 0; k < r.layout.markerIx; k += max(1, len(r.layout.files)/100) {
		probed = append(probed, pveDir+"/"+r.layout.files[k])
	}
	var probing [3]bool // by node; left running only by an error
	defer func() {
		for i, on := range probing {
			if on {
				_, _ = e.agent(i).call(request{Op: "probestop"})
			}
		}
	}()
	for i := 1; i <= 2; i++ {
		if _, err := e.agent(i).call(request{Op: "probe", Files: probed, Size: resyncFile, PollMS: 1, Workers: 1}); err != nil {
			return nil, err
		}
		probing[i] = true
	}
	var cpuIdle, cpu0 [2]procSample
	for i := range cpuIdle {
		if cpuIdle[i], err = e.proc(i + 1); err != nil {
			return nil, err
		}
	}
	idleStart := monotonic()
	time.Sleep(2 * time.Second)
	var idle12 uint64
	for i := range cpu0 {
		if cpu0[i], err = e.proc(i + 1); err != nil {
			return nil, err
		}
		idle12 += cpu0[i].cpuTicks - cpuIdle[i].cpuTicks
	}
	idleSecs := float64(monotonic()-idleStart) / 1e9
	corosync3 = true
	if err := e.b.StartCorosync(3); err != nil {
		return nil, err
	}
	if err := e.b.WaitQuorum(60*time.Second, 1, 2, 3); err != nil {
		return nil, err
	}
	if err := e.start(3, bin); err != nil {
		return nil, err
	}
	// The daemon is running in node 3 now (StartPmxcfs returns once it is), give or take the
	// bench's 10 ms poll.
	t0 := monotonic()
	marker := pveDir + "/" + r.layout.marker
	if err := e.agent(3).send(request{Op: "waitfile", Name: marker, Content: string(content(resyncFile, r.layout.markerIx)), PollMS: 10, Timeout: 600}); err != nil {
		return nil, err
	}
	if _, err := e.agent(3).recv(); err != nil {
		return nil, err
	}
	seen, err := e.agent(3).recv()
	if err != nil {
		return nil, err
	}
	var cpu12 uint64
	for i := range cpu0 {
		p, err := e.proc(i + 1)
		if err != nil {
			return nil, err
		}
		cpu12 += p.cpuTicks - cpu0[i].cpuTicks
	}
	cpu3, err := e.proc(3)
	if err != nil {
		return nil, err
	}
	var idle, during []float64
	for i := 1; i <= 2; i++ {
		probing[i] = false
		p, err := e.agent(i).call(request{Op: "probestop"})
		if err != nil {
			return nil, err
		}
		var slow []int
		for k, at := range p.Times {
			switch {
			case at < t0:
				idle = append(idle, p.Samples[k])
			case at <= seen.T1:
				during = append(during, p.Samples[k])
				if p.Samples[k] >= 50 {
					slow = append(slow, k)
				}
			}
		}
		// The slowest reads and when they started, to look up in a daemon's trace
		// (PMXCFS_TRACE).
		slices.SortFunc(slow, func(a, b int) int { return cmp.Compare(p.Samples[b], p.Samples[a]) })
		var worst []string
		for _, k := range slow[:min(len(slow), 5)] {
			worst = append(worst, fmt.Sprintf("%.0f ms at %.3f s", p.Samples[k], float64(p.Times[k])/1e9))
		}
		if len(slow) > 0 {
			fmt.Fprintf(os.Stderr, "fsbench: resync: node %d: %d reads of 50 ms or more while node 3 synced; slowest (CLOCK_MONOTONIC): %s\n",
				i, len(slow), strings.Join(worst, ", "))
		}
	}
	// Both daemons apply a sync as a whole (at UPDATE_COMPLETE), so the last entry sent means
	// all are there; that is checked outside the timing.
	for try := 0; ; try++ {
		cnt, err := e.agent(3).call(request{Op: "count", Dir: pveDir + "/" + resyncTop})
		if err != nil {
			return nil, err
		}
		if cnt.N == r.layout.below {
			if try > 0 {
				fmt.Fprintf(os.Stderr, "fsbench: warning: node 3 showed the last entry before all others; the resync figure is too low\n")
			}
			break
		}
		if try == 30 {
			return nil, fmt.Errorf("node 3 holds %d entries below /%s after the sync, want %d", cnt.N, resyncTop, r.layout.below)
		}
		time.Sleep(time.Second)
	}
	return map[string]float64{"resync.time": float64(seen.T1-t0) / 1e9,
		"resync.readmax": slices.Max(append(during, 0)), "resync.read99": percentile(during, 99),
		"resync.idlemax": slices.Max(append(idle, 0)),
		"resync.cpu12":   cpuMicros(cpu12) / 1e6 / (float64(seen.T1-t0) / 1e9),
		"resync.idlecpu": cpuMicros(idle12) / 1e6 / idleSecs,
		"resync.cpu3":    cpuMicros(cpu3.cpuTicks) / 1e6}, nil
}
