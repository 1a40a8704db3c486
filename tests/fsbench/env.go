package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/tests/bench"
)

// agent is the host's end of one in-node agent (see agent.go).
type agent struct {
	node int
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
}

func startAgent(b *bench.Bench, node int) (*agent, error) {
	// The running executable may live where the node cannot see it (go run builds under
	// /tmp); /proc/PID/exe reaches it from any mount namespace.
	cmd, err := b.Command(node, fmt.Sprintf("/proc/%d/exe", os.Getpid()), "agent")
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &agent{node: node, cmd: cmd, in: in, out: bufio.NewReader(out)}, nil
}

func (a *agent) send(req request) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	_, err = a.in.Write(append(data, '\n'))
	return err
}

func (a *agent) recv() (response, error) {
	line, err := a.out.ReadBytes('\n')
	if err != nil {
		return response{}, fmt.Errorf("node %d agent: %w", a.node, err)
	}
	var r response
	if err := json.Unmarshal(line, &r); err != nil {
		return response{}, fmt.Errorf("node %d agent: %q: %w", a.node, line, err)
	}
	if r.Err != "" {
		return r, fmt.Errorf("node %d: %s", a.node, r.Err)
	}
	return r, nil
}

func (a *agent) call(req request) (response, error) {
	if err := a.send(req); err != nil {
		return response{}, fmt.Errorf("node %d agent: %w", a.node, err)
	}
	return a.recv()
}

// stop ends the agent: EOF on its input, then SIGKILL if it does not leave.
func (a *agent) stop() {
	a.in.Close()
	done := make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = a.cmd.Process.Kill()
		<-done
	}
}

// env is one bench (a 1-node bench without corosync for local mode, or a 3-node cluster)
// with an agent in every node; workloads start fresh daemons in it.
type env struct {
	b      *bench.Bench
	local  bool
	agents []*agent

	mu      sync.Mutex
	stopped bool
}

const pveDir = "/etc/pve"

// share lists host directories the nodes must see (the daemons' binaries), even where
// the nodes' private /tmp, /run, /etc or /var hide them.
func newEnv(dir string, nodes int, local bool, share []string) (*env, error) {
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	b, err := bench.New(bench.Options{Dir: dir, Unclustered: local, Log: log, Share: share})
	if err != nil {
		return nil, err
	}
	e := &env{b: b, local: local}
	if err := b.Up(nodes); err != nil {
		e.close()
		return nil, err
	}
	if !local {
		if err := b.WaitQuorum(60 * time.Second); err != nil {
			e.close()
			return nil, err
		}
	}
	for i := 1; i <= nodes; i++ {
		a, err := startAgent(b, i)
		if err != nil {
			e.close()
			return nil, err
		}
		e.mu.Lock()
		e.agents = append(e.agents, a)
		e.mu.Unlock()
	}
	return e, nil
}

// close stops the agents and takes the bench down (daemons, namespaces, network).
func (e *env) close() {
	e.mu.Lock()
	agents := e.agents
	e.agents = nil
	e.mu.Unlock()
	for _, a := range agents {
		a.stop()
	}
	if err := e.b.Down(); err != nil {
		fmt.Fprintf(os.Stderr, "fsbench: bench down: %v (clean up with: go run ./tests/bench/cmd -dir %s down)\n", err, e.b.Dir())
	}
}

// interrupt kills the agents, so that whatever waits on them returns at once.
func (e *env) interrupt() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopped = true
	for _, a := range e.agents {
		_ = a.cmd.Process.Kill()
	}
}

func (e *env) agent(i int) *agent { return e.agents[i-1] }

func (e *env) pid(i int) int { return e.b.Pid(i, bench.Pmxcfs) }

func (e *env) dbDir(i int) string { return filepath.Join(e.b.NodeDir(i), "var-lib-pve-cluster") }

// stopAll stops every daemon and empties every node's /var/lib/pve-cluster.
func (e *env) stopAll() error {
	for i := 1; i <= e.b.N(); i++ {
		if err := e.b.Kill(i, bench.Pmxcfs, false); err != nil {
			return err
		}
		entries, err := os.ReadDir(e.dbDir(i))
		if err != nil {
			return err
		}
		for _, ent := range entries {
			if err := os.RemoveAll(filepath.Join(e.dbDir(i), ent.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *env) start(i int, bin string) error {
	args := []string{"-f"}
	if e.local {
		args = append(args, "-l")
	}
	return e.b.StartPmxcfs(i, bin, args...)
}

// fresh stops every daemon, empties the databases and starts bin on every node, returning
// once each node can write /etc/pve (mounted, and in a cluster quorate and synced).
func (e *env) fresh(bin string) error {
	if err := e.stopAll(); err != nil {
		return err
	}
	var nodes []int
	for i := 1; i <= e.b.N(); i++ {
		if err := e.start(i, bin); err != nil {
			return err
		}
		nodes = append(nodes, i)
	}
	return e.ready(nodes...)
}

// ready waits until the given nodes are mounted and writable.
func (e *env) ready(nodes ...int) error {
	if err := e.b.WaitPmxcfs(60*time.Second, nodes...); err != nil {
		return err
	}
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for k, i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[k] = e.agent(i).call(request{Op: "ready", Dir: pveDir + "/bench", Name: fmt.Sprintf("ready-node%d", i), Content: "ok\n", Timeout: 60})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		e.mu.Lock()
		stopped := e.stopped
		e.mu.Unlock()
		for _, i := range nodes {
			if !stopped {
				fmt.Fprint(os.Stderr, e.b.Logs(i))
			}
		}
		return err
	}
	return nil
}

func (e *env) proc(i int) (procSample, error) {
	pid := e.pid(i)
	if pid == 0 {
		return procSample{}, fmt.Errorf("node %d: pmxcfs is not running", i)
	}
	return readProc(pid)
}
