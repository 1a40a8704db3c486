package dfsm_test

import (
	"bufio"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/dfsm"
	"github.com/pmxcfs-go/pmxcfs/dfsm/dfsmtest"
)

// Scenario files (testdata/*.txt) hold blocks of
//
//	command args
//	----
//	expected output
//	(blank line)
//
// Lines starting with # between blocks are comments. Run with -rewrite to
// regenerate the expected output after a reviewed change.
var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata scenarios")

type scenario struct {
	t      testing.TB
	sim    *dfsmtest.Simulator
	apps   map[dfsm.Member]*kvApp
	out    []string
	writes []*scenarioWrite
}

type scenarioWrite struct {
	name string
	from dfsm.Member
	p    *dfsm.Pending
}

func quietLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// traceLogs are the engine log messages worth a line in scenario traces.
var traceLogs = []string{"verification", "wrong checksum", "delay verify", "wrong member",
	"resending", "protocol version", "short message", "left the process group"}

type traceHook struct {
	self *dfsm.Member
	out  *[]string
}

func (traceHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h traceHook) Fire(e *logrus.Entry) error {
	for _, s := range traceLogs {
		if strings.Contains(e.Message, s) {
			*h.out = append(*h.out, fmt.Sprintf("%s log: %s", *h.self, e.Message))
			break
		}
	}
	return nil
}

func newScenario(t testing.TB) *scenario {
	s := &scenario{t: t, sim: dfsmtest.NewSimulator(1000), apps: map[dfsm.Member]*kvApp{}}
	s.sim.Trace = func(l string) { s.out = append(s.out, l) }
	return s
}

func (s *scenario) spawn(node uint32) *dfsmtest.SimProc {
	app := newKVApp(func(l string) { s.out = append(s.out, l) })
	var self dfsm.Member
	log := logrus.New()
	log.SetOutput(io.Discard)
	log.AddHook(traceHook{self: &self, out: &s.out})
	p, err := s.sim.Spawn(node, dfsm.Config{Name: "test", ProtocolVersion: 1, App: app, Log: log,
		OnModeChange: func(from, to dfsm.Mode) {
			s.out = append(s.out, fmt.Sprintf("%s mode %s -> %s", self, from, to))
		}})
	if err != nil {
		s.t.Fatalf("spawn: %v", err)
	}
	self = p.Member
	app.self, app.engine = p.Member, p.Engine
	s.apps[p.Member] = app
	return p
}

func (s *scenario) proc(arg string) *dfsmtest.SimProc {
	n, err := strconv.ParseUint(arg, 10, 32)
	if err != nil {
		s.t.Fatalf("bad node %q", arg)
	}
	p := s.sim.Proc(uint32(n))
	if p == nil {
		s.t.Fatalf("node %s has no running process", arg)
	}
	return p
}

func nodes(args []string) []uint32 {
	var out []uint32
	for _, a := range args {
		n, _ := strconv.ParseUint(a, 10, 32)
		out = append(out, uint32(n))
	}
	return out
}

func (s *scenario) exec(cmd string, args []string) string {
	s.out = nil
	switch cmd {
	case "spawn":
		for _, n := range nodes(args) {
			p := s.spawn(n)
			s.out = append(s.out, fmt.Sprintf("spawned %s", p.Member))
		}
	case "run":
		s.sim.Run(100000)
	case "step", "deliver":
		n := 1
		if len(args) > 0 {
			n, _ = strconv.Atoi(args[0])
		}
		for i := 0; i < n; i++ {
			if cmd == "step" {
				s.sim.Step()
			} else {
				s.sim.StepMessage()
			}
		}
	case "write", "fail":
		p := s.proc(args[0])
		for _, kv := range args[1:] {
			sub, payload := uint16(kvSet), []byte(kv)
			if cmd == "fail" {
				sub = kvFail
			}
			pd, err := p.Engine.Submit(sub, payload)
			if err != nil {
				s.out = append(s.out, fmt.Sprintf("submit error %v", err))
				continue
			}
			w := &scenarioWrite{name: fmt.Sprintf("w%d", len(s.writes)+1), from: p.Member, p: pd}
			s.writes = append(s.writes, w)
		}
	case "partition":
		var groups [][]uint32
		var cur []uint32
		for _, a := range append(args, "|") {
			if a == "|" {
				groups = append(groups, cur)
				cur = nil
				continue
			}
			cur = append(cur, nodes([]string{a})...)
		}
		s.sim.Partition(groups...)
	case "heal":
		s.sim.Heal()
	case "crash":
		s.sim.Crash(s.proc(args[0]))
	case "stop":
		s.sim.Stop(s.proc(args[0]))
	case "verify":
		if err := s.proc(args[0]).Engine.VerifyTick(); err != nil {
			s.out = append(s.out, fmt.Sprintf("verify error %v", err))
		}
	case "corrupt":
		p := s.proc(args[0])
		k, v, _ := strings.Cut(args[1], "=")
		s.apps[p.Member].data[k] = v
	case "time":
		t, _ := strconv.ParseInt(args[0], 10, 64)
		s.sim.Clock.T = t
	case "inject":
		s.inject(s.proc(args[0]), args[1:])
	case "state":
		s.state()
	default:
		s.t.Fatalf("unknown command %q", cmd)
	}
	return strings.Join(s.out, "\n")
}

// inject sends a hand-made message from a node: key=value arguments type,
// sub, version, count, epoch (c/t/n/p, or "current" for the sender's sync
// epoch), payload (text) or hex (raw bytes, replacing everything).
func (s *scenario) inject(p *dfsmtest.SimProc, args []string) {
	m := dfsm.Message{}
	var raw []byte
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "type":
			for t := dfsm.MsgNormal; t <= dfsm.MsgVerify; t++ {
				if t.String() == v {
					m.Type = t
				}
			}
		case "sub":
			n, _ := strconv.Atoi(v)
			m.Subtype = uint16(n)
		case "version":
			n, _ := strconv.Atoi(v)
			m.ProtocolVersion = uint32(n)
		case "count":
			m.Count, _ = strconv.ParseUint(v, 10, 64)
		case "epoch":
			if v == "current" {
				m.Epoch = p.Engine.SyncEpoch()
				continue
			}
			f := strings.Split(v, "/")
			var e [4]uint32
			for i := range f {
				n, _ := strconv.ParseUint(f[i], 10, 32)
				e[i] = uint32(n)
			}
			m.Epoch = dfsm.Epoch{Counter: e[0], Time: e[1], NodeID: e[2], PID: e[3]}
		case "payload":
			m.Payload = []byte(v)
		case "hex":
			raw, _ = hex.DecodeString(v)
		}
	}
	if raw == nil {
		m.Time = uint32(s.sim.Clock.T)
		raw = m.Encode()
	}
	if err := s.sim.Inject(p, raw); err != nil {
		s.out = append(s.out, fmt.Sprintf("inject error %v", err))
	}
}

func (s *scenario) state() {
	for _, p := range s.sim.Alive() {
		a := s.apps[p.Member]
		mq, sq := p.Engine.QueueLen()
		s.out = append(s.out, fmt.Sprintf("%s %s %s queue=%d syncqueue=%d", p.Member, p.Engine.Mode(), a.State(), mq, sq))
	}
	for _, w := range s.writes {
		res := "waiting"
		select {
		case <-w.p.Done():
			if v, err := w.p.Result(); err != nil {
				res = err.Error()
			} else {
				res = strconv.Itoa(v)
			}
		default:
		}
		s.out = append(s.out, fmt.Sprintf("%s %s #%d: %s", w.name, w.from, w.p.Count, res))
	}
}

type scenarioBlock struct {
	comments []string
	cmd      string
	expected []string
}

func parseScenario(t *testing.T, path string) []scenarioBlock {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []scenarioBlock
	var cur *scenarioBlock
	var comments []string
	inOutput := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case inOutput && line == "":
			inOutput = false
			blocks = append(blocks, *cur)
			cur = nil
		case inOutput:
			cur.expected = append(cur.expected, line)
		case line == "----":
			if cur == nil {
				t.Fatalf("%s: ---- without a command", path)
			}
			inOutput = true
		case line == "" || strings.HasPrefix(line, "#"):
			comments = append(comments, line)
		default:
			cur = &scenarioBlock{comments: comments, cmd: line}
			comments = nil
		}
	}
	if cur != nil {
		blocks = append(blocks, *cur)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return blocks
}

func TestScenarios(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatal("no scenarios in testdata")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			blocks := parseScenario(t, path)
			s := newScenario(t)
			var rewritten strings.Builder
			for _, b := range blocks {
				f := strings.Fields(b.cmd)
				got := s.exec(f[0], f[1:])
				want := strings.Join(b.expected, "\n")
				if *rewrite {
					for _, c := range b.comments {
						rewritten.WriteString(c + "\n")
					}
					rewritten.WriteString(b.cmd + "\n----\n")
					if got != "" {
						rewritten.WriteString(got + "\n")
					}
					rewritten.WriteString("\n")
					continue
				}
				if got != want {
					t.Errorf("%s: %q\n--- got\n%s\n--- want\n%s", path, b.cmd, got, want)
				}
			}
			if *rewrite {
				out := strings.TrimRight(rewritten.String(), "\n") + "\n"
				if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
