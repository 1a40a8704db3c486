// Command cmd starts, inspects and stops a bench by hand:
//
//	go run ./tests/bench/cmd [-dir DIR] up [-id ID] [-token MS] [-args "-f"] N [BIN | BIN1 ... BINN]
//	go run ./tests/bench/cmd [-dir DIR] COMMAND ...
//
// The bench state lives in DIR (default $BENCH_DIR or /tmp/pmxcfs-bench), so
// every later command finds the nodes that up started.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pmxcfs-go/pmxcfs/tests/bench"
)

const usage = `usage: cmd [-dir DIR] COMMAND ...
  up [-id ID] [-token MS] [-args "-f"] N [BIN | BIN1 ... BINN]
                        start N nodes with corosync; with BIN(s) also pmxcfs
  down                  stop and remove everything (logs stay in DIR)
  status                per node: daemons, link, /etc/pve, quorum
  exec I [CMD ...]      run CMD (default: a shell) inside node I
  partition I | heal I  take node I's veth down / up
  kill I corosync|pmxcfs [hard]
  start I corosync|pmxcfs [BIN [ARGS ...]]
  restart I corosync|pmxcfs
  wait-quorum [-t SECS] [I ...]
  wait-inquorate [-t SECS] I ...
  logs I
`

func main() {
	defaultDir := os.Getenv("BENCH_DIR")
	if defaultDir == "" {
		defaultDir = "/tmp/pmxcfs-bench"
	}
	dir := flag.String("dir", defaultDir, "bench state and log directory")
	flag.Usage = func() { fmt.Fprint(os.Stderr, usage); flag.PrintDefaults() }
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := dispatch(*dir, flag.Arg(0), flag.Args()[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func dispatch(dir, command string, args []string) error {
	if command == "up" {
		return up(dir, args)
	}
	b, err := bench.Load(dir, nil)
	if err != nil {
		return err
	}
	node := func() (int, error) {
		if len(args) == 0 {
			return 0, fmt.Errorf("%s needs a node number", command)
		}
		i, err := strconv.Atoi(args[0])
		if err != nil || i < 1 || i > b.N() {
			return 0, fmt.Errorf("node %q: want 1..%d", args[0], b.N())
		}
		return i, nil
	}
	component := func() (bench.Component, error) {
		if len(args) < 2 || (args[1] != "corosync" && args[1] != "pmxcfs") {
			return "", fmt.Errorf("%s needs corosync or pmxcfs", command)
		}
		return bench.Component(args[1]), nil
	}
	switch command {
	case "down":
		return b.Down()
	case "status":
		status(b)
		return nil
	case "exec":
		i, err := node()
		if err != nil {
			return err
		}
		argv := args[1:]
		if len(argv) == 0 {
			argv = []string{"/bin/bash"}
		}
		cmd, err := b.Command(i, argv...)
		if err != nil {
			return err
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			return err
		}
		return nil
	case "partition", "heal":
		i, err := node()
		if err != nil {
			return err
		}
		if command == "partition" {
			return b.Partition(i)
		}
		return b.Heal(i)
	case "kill", "start", "restart":
		i, err := node()
		if err != nil {
			return err
		}
		c, err := component()
		if err != nil {
			return err
		}
		switch {
		case command == "kill":
			return b.Kill(i, c, len(args) > 2 && args[2] == "hard")
		case command == "restart":
			return b.Restart(i, c)
		case c == bench.Corosync:
			return b.StartCorosync(i)
		case len(args) > 2:
			return b.StartPmxcfs(i, args[2], args[3:]...)
		default:
			return b.Restart(i, c)
		}
	case "wait-quorum", "wait-inquorate":
		fs := flag.NewFlagSet(command, flag.ContinueOnError)
		secs := fs.Int("t", 30, "timeout in seconds")
		if err := fs.Parse(args); err != nil {
			return err
		}
		var nodes []int
		for _, a := range fs.Args() {
			i, err := strconv.Atoi(a)
			if err != nil {
				return fmt.Errorf("node %q: not a number", a)
			}
			nodes = append(nodes, i)
		}
		timeout := time.Duration(*secs) * time.Second
		if command == "wait-quorum" {
			return b.WaitQuorum(timeout, nodes...)
		}
		if len(nodes) == 0 {
			return fmt.Errorf("wait-inquorate needs node numbers")
		}
		return b.WaitInquorate(timeout, nodes...)
	case "logs":
		i, err := node()
		if err != nil {
			return err
		}
		fmt.Print(b.Logs(i))
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", command, usage)
}

func up(dir string, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	id := fs.String("id", "", "bench id, 1-6 chars [a-z0-9] (default random)")
	token := fs.Int("token", 1000, "totem.token in ms")
	pmxArgs := fs.String("args", "-f", "arguments for every pmxcfs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return fmt.Errorf("up needs a node count")
	}
	n, err := strconv.Atoi(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("node count %q: not a number", fs.Arg(0))
	}
	bins := fs.Args()[1:]
	if len(bins) == 1 {
		for len(bins) < n {
			bins = append(bins, bins[0])
		}
	}
	if len(bins) != 0 && len(bins) != n {
		return fmt.Errorf("give one BIN for all nodes or exactly %d", n)
	}
	// The nodes must see the binaries, wherever they were built.
	var share []string
	for _, bin := range bins {
		share = append(share, filepath.Dir(bin))
	}
	b, err := bench.New(bench.Options{ID: *id, Dir: dir, TokenMS: *token, Share: share})
	if err != nil {
		return err
	}
	if err := b.Up(n); err != nil {
		return fmt.Errorf("%w\ninspect %s, then run: down", err, dir)
	}
	for i, bin := range bins {
		if err := b.StartPmxcfs(i+1, bin, strings.Fields(*pmxArgs)...); err != nil {
			return err
		}
	}
	if len(bins) > 0 {
		if err := b.WaitPmxcfs(30 * time.Second); err != nil {
			return err
		}
	}
	fmt.Printf("bench %s up: %d nodes, state in %s\n", b.ID(), n, dir)
	return nil
}

func status(b *bench.Bench) {
	fmt.Printf("bench %s: %d nodes, bridge %s, dir %s\n", b.ID(), b.N(), b.BridgeName(), b.Dir())
	for i := 1; i <= b.N(); i++ {
		link := "missing"
		if out, err := exec.Command("ip", "-br", "link", "show", "dev", b.VethName(i)).Output(); err == nil {
			if f := strings.Fields(string(out)); len(f) > 1 {
				link = f[1]
			}
		}
		quorum := "unknown"
		if q, err := b.Quorate(i); err == nil {
			quorum = map[bool]string{true: "quorate", false: "inquorate"}[q]
		}
		fmt.Printf("%s %s link=%s corosync=%d pmxcfs=%d /etc/pve-fuse=%v %s\n", bench.NodeName(i), b.IP(i), link,
			b.Pid(i, bench.Corosync), b.Pid(i, bench.Pmxcfs), b.PveMounted(i), quorum)
	}
}
