package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmxcfs-go/pmxcfs/cpg"
	"github.com/pmxcfs-go/pmxcfs/qb/qbclient"
)

// The agent is this program started inside a bench node (`fsbench agent`): it does the file
// system, IPC and CPG work there, in the node's mount and network namespaces, and answers
// one JSON line per request on stdout. Times are CLOCK_MONOTONIC nanoseconds, which every
// process on the machine shares, so the host can subtract a time taken on one node from a
// time taken on another.
type request struct {
	Op      string   `json:"op"`
	Dir     string   `json:"dir,omitempty"`
	Name    string   `json:"name,omitempty"`
	Content string   `json:"content,omitempty"`
	Prefix  string   `json:"prefix,omitempty"`
	N       int      `json:"n,omitempty"`
	Size    int      `json:"size,omitempty"`
	Workers int      `json:"workers,omitempty"`
	Bulk    int      `json:"bulk,omitempty"`
	PollMS  float64  `json:"poll_ms,omitempty"`
	Timeout float64  `json:"timeout,omitempty"` // seconds
	Files   []string `json:"files,omitempty"`
}

type response struct {
	Err     string    `json:"err,omitempty"`
	Armed   bool      `json:"armed,omitempty"` // first of two answers to "waitfile"
	N       int       `json:"n,omitempty"`
	T0      int64     `json:"t0,omitempty"`
	T1      int64     `json:"t1,omitempty"`
	Rates   []float64 `json:"rates,omitempty"`
	Samples []float64 `json:"samples,omitempty"`
	Times   []int64   `json:"times,omitempty"` // when each sample started (probe)
}

func monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func runAgent(in io.Reader, out io.Writer) error {
	enc := json.NewEncoder(out)
	rd := bufio.NewReader(in)
	for {
		line, err := rd.ReadBytes('\n')
		if errors.Is(err, io.EOF) && len(bytes.TrimSpace(line)) == 0 {
			return nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		var req request
		if err := json.Unmarshal(line, &req); err != nil {
			return fmt.Errorf("agent: bad request %q: %v", line, err)
		}
		resp, err := serve(req, func(r response) error { return enc.Encode(r) })
		if err != nil {
			resp = response{Err: err.Error()}
		}
		if err := enc.Encode(resp); err != nil {
			return err
		}
	}
}

// content is size bytes of printable text, different for each index.
func content(size, index int) []byte {
	b := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz\n"), size/37+1)[:size]
	tag := []byte(fmt.Sprintf("%d\n", index))
	copy(b, tag[:min(len(tag), size)])
	return b
}

func fileName(dir, prefix string, worker, i int) string {
	return filepath.Join(dir, fmt.Sprintf("%s%d-%05d.cfg", prefix, worker, i))
}

// serve runs one request; early sends an intermediate answer.
func serve(req request, early func(response) error) (response, error) {
	timeout := time.Duration(req.Timeout * float64(time.Second))
	if timeout <= 0 {
		timeout = time.Minute
	}
	switch req.Op {
	case "ready":
		// Writable means mounted, quorate and synced.
		deadline := time.Now().Add(timeout)
		for {
			err := os.MkdirAll(req.Dir, 0o755)
			if err == nil {
				err = os.WriteFile(filepath.Join(req.Dir, req.Name), []byte(req.Content), 0o640)
			}
			if err == nil {
				return response{}, nil
			}
			if time.Now().After(deadline) {
				return response{}, fmt.Errorf("not writable after %v: %w", timeout, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	case "write", "read":
		workers := max(req.Workers, 1)
		errs := make([]error, workers)
		var wg sync.WaitGroup
		t0 := monotonic()
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range req.N {
					name := fileName(req.Dir, req.Prefix, w, i)
					if req.Op == "write" {
						errs[w] = os.WriteFile(name, content(req.Size, i), 0o640)
					} else {
						errs[w] = statRead(name, req.Size)
					}
					if errs[w] != nil {
						return
					}
				}
			}()
		}
		wg.Wait()
		t1 := monotonic()
		if err := errors.Join(errs...); err != nil {
			return response{}, err
		}
		return response{N: workers * req.N, T0: t0, T1: t1}, nil
	case "save":
		// What PVE's file_set_contents does: write a temporary file beside the target, then
		// rename it over the target.
		t0 := monotonic()
		for i := range req.N {
			target := filepath.Join(req.Dir, fmt.Sprintf("%s%d.conf", req.Prefix, i%10))
			tmp := fmt.Sprintf("%s.tmp.%d", target, os.Getpid())
			if err := os.WriteFile(tmp, content(req.Size, i), 0o640); err != nil {
				return response{}, err
			}
			if err := os.Rename(tmp, target); err != nil {
				return response{}, err
			}
		}
		return response{N: req.N}.since(t0), nil
	case "chunked":
		// Like dd bs=4k: one write() per 4 KiB.
		t0 := monotonic()
		for i := range req.N {
			if err := writeChunked(fileName(req.Dir, req.Prefix, 0, i), content(req.Size, i), 4096); err != nil {
				return response{}, err
			}
		}
		return response{N: req.N}.since(t0), nil
	case "writeone":
		t0 := monotonic()
		if err := os.WriteFile(req.Name, []byte(req.Content), 0o640); err != nil {
			return response{}, err
		}
		return response{T0: t0, T1: monotonic()}, nil
	case "waitfile":
		if err := early(response{Armed: true}); err != nil {
			return response{}, err
		}
		poll := time.Duration(req.PollMS * float64(time.Millisecond))
		deadline := time.Now().Add(timeout)
		want := []byte(req.Content)
		for {
			if data, err := os.ReadFile(req.Name); err == nil && bytes.Equal(data, want) {
				return response{T1: monotonic()}, nil
			}
			if time.Now().After(deadline) {
				return response{}, fmt.Errorf("%s did not show %q within %v", req.Name, req.Content, timeout)
			}
			time.Sleep(poll)
		}
	case "count":
		n := 0
		err := filepath.WalkDir(req.Dir, func(_ string, _ fs.DirEntry, err error) error {
			n++
			return err
		})
		return response{N: n - 1}, err
	case "probe":
		return response{}, startProbe(req.Files, req.Size, time.Duration(req.PollMS*float64(time.Millisecond)), req.Workers > 0)
	case "probestop":
		return stopProbe()
	case "ipc":
		return ipcRates(req.Name, req.N)
	case "cpg":
		return cpgFloor(req.N, req.Bulk, req.Size, timeout)
	}
	return response{}, fmt.Errorf("unknown op %q", req.Op)
}

// since fills T0 with t0 and T1 with now.
func (r response) since(t0 int64) response {
	r.T0, r.T1 = t0, monotonic()
	return r
}

func statRead(name string, size int) error {
	if _, err := os.Stat(name); err != nil {
		return err
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	if len(data) != size {
		return fmt.Errorf("%s: read %d bytes, want %d", name, len(data), size)
	}
	return nil
}

func writeChunked(name string, data []byte, chunk int) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	for off := 0; off < len(data); off += chunk {
		if _, err := f.Write(data[off:min(off+chunk, len(data))]); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// ipcRates measures round trips per second of GET_FS_VERSION and of GET_CONFIG for path
// through libqb, the way PVE's Perl client sends them.
func ipcRates(path string, n int) (response, error) {
	const getFSVersion, getConfig = 1, 6
	c, err := qbclient.Connect("pve2")
	if err != nil {
		return response{}, fmt.Errorf("connect pve2: %w", err)
	}
	defer c.Close()
	var rates []float64
	for _, q := range []struct {
		op      int32
		payload []byte
	}{{getFSVersion, nil}, {getConfig, append([]byte(path), 0)}} {
		t0 := monotonic()
		for range n {
			r, err := c.Send(q.op, q.payload)
			if err != nil {
				return response{}, err
			}
			if r.Error != 0 || len(r.Data) == 0 {
				return response{}, fmt.Errorf("request %d: error %d, %d bytes", q.op, r.Error, len(r.Data))
			}
		}
		rates = append(rates, float64(n)/(float64(monotonic()-t0)/1e9))
	}
	return response{Rates: rates}, nil
}

// cpgFloor joins a CPG group of its own and measures what corosync allows on this bench:
// the time of n multicasts from sending to the delivery of the same message back to this
// process (agreed order, so a full token rotation of the ring: the least any replicated
// change can take), then how many messages of size bytes per second it delivers when they
// are sent back to back (bulk of them; a resync sends one such message per entry).
func cpgFloor(n, bulk, size int, timeout time.Duration) (response, error) {
	delivered := make(chan uint64, 1024)
	joined := make(chan struct{}, 1)
	pid := uint32(os.Getpid())
	var local uint32
	h, err := cpg.Initialize(cpg.Callbacks{
		Deliver: func(m cpg.Message) {
			if m.NodeID == local && m.PID == pid && len(m.Data) >= 8 {
				delivered <- binary.LittleEndian.Uint64(m.Data)
			}
		},
		ConfChg: func(c cpg.ConfChg) {
			for _, a := range c.Members {
				if a.NodeID == local && a.PID == pid {
					select {
					case joined <- struct{}{}:
					default:
					}
				}
			}
		},
	})
	if err != nil {
		return response{}, err
	}
	defer h.Close()
	if local, err = h.LocalNodeID(); err != nil {
		return response{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- h.Run(ctx) }()
	if err := h.Join(ctx, "fsbench_floor"); err != nil {
		return response{}, err
	}
	select {
	case <-joined:
	case <-ctx.Done():
		return response{}, errors.New("cpg: own join never delivered")
	}
	// wait receives deliveries until seq has come back.
	wait := func(seq uint64) error {
		for {
			select {
			case got := <-delivered:
				if got == seq {
					return nil
				}
			case err := <-runErr:
				return fmt.Errorf("cpg dispatch: %v", err)
			case <-ctx.Done():
				return errors.New("cpg: message not delivered in time")
			}
		}
	}
	seq := uint64(0)
	samples := make([]float64, 0, n)
	for range n {
		seq++
		t0 := monotonic()
		if err := mcastRetry(ctx, h, binary.LittleEndian.AppendUint64(nil, seq)); err != nil {
			return response{}, err
		}
		if err := wait(seq); err != nil {
			return response{}, err
		}
		samples = append(samples, float64(monotonic()-t0)/1e6)
	}
	msg := make([]byte, max(size, 8))
	done := make(chan error, 1)
	last := seq + uint64(bulk)
	go func() { done <- wait(last) }()
	t0 := monotonic()
	for range bulk {
		seq++
		binary.LittleEndian.PutUint64(msg, seq)
		for {
			// Should corosync answer TRY_AGAIN (queue full), a short pause keeps it busy
			// where the binding's retry would wait 100 ms.
			err := h.TryMcast(msg)
			if err == nil {
				break
			}
			if !errors.Is(err, cpg.ErrTryAgain) || ctx.Err() != nil {
				return response{}, err
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	if err := <-done; err != nil {
		return response{}, err
	}
	rate := float64(bulk) / (float64(monotonic()-t0) / 1e9)
	_ = h.Leave(ctx, "fsbench_floor")
	return response{Samples: samples, Rates: []float64{rate}}, nil
}

// mcastRetry sends msg, retrying while corosync answers TRY_AGAIN.
func mcastRetry(ctx context.Context, h *cpg.Handle, msg []byte) error {
	for {
		err := h.TryMcast(msg)
		if !errors.Is(err, cpg.ErrTryAgain) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// The probe is a reader running beside the agent's other requests: it stats and reads the
// given files in turn, pausing between operations, and records when each stat+read started
// and how long it took, until probestop. With a writer, another goroutine meanwhile
// rewrites every tenth of those files in place (no truncation, content of the same size,
// so readers always see a whole file), as a program on the node saving its configuration
// would.
var probe struct {
	mu   sync.Mutex
	stop chan struct{}
	wg   sync.WaitGroup
	resp response
	errs [2]error // reader, writer
	n    int      // files rewritten
}

func startProbe(files []string, size int, pause time.Duration, writer bool) error {
	probe.mu.Lock()
	defer probe.mu.Unlock()
	if probe.stop != nil {
		return errors.New("probe already running")
	}
	if len(files) == 0 {
		return errors.New("probe: no files")
	}
	probe.stop = make(chan struct{})
	probe.resp, probe.errs, probe.n = response{}, [2]error{}, 0
	stop := probe.stop
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	probe.wg.Add(1)
	go func() {
		defer probe.wg.Done()
		var r response
		for i := 0; !stopped(); i++ {
			t0 := monotonic()
			if err := statRead(files[i%len(files)], size); err != nil {
				probe.errs[0] = err
				return
			}
			r.Times = append(r.Times, t0)
			r.Samples = append(r.Samples, float64(monotonic()-t0)/1e6)
			time.Sleep(pause)
		}
		probe.resp = r
	}()
	if writer {
		probe.wg.Add(1)
		go func() {
			defer probe.wg.Done()
			for i := 0; !stopped(); i += 10 {
				if err := rewrite(files[i%len(files)], content(size, i)); err != nil {
					probe.errs[1] = err
					return
				}
				probe.n++
				time.Sleep(pause)
			}
		}()
	}
	return nil
}

func stopProbe() (response, error) {
	probe.mu.Lock()
	defer probe.mu.Unlock()
	if probe.stop == nil {
		return response{}, errors.New("no probe running")
	}
	close(probe.stop)
	probe.wg.Wait()
	probe.stop = nil
	if err := errors.Join(probe.errs[:]...); err != nil {
		return response{}, fmt.Errorf("probe: %w", err)
	}
	r := probe.resp
	r.N = probe.n
	return r, nil
}

// rewrite overwrites the start of an existing file with data and closes it.
func rewrite(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
