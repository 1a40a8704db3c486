package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/tests/bench"
)

// shell is a long-running sh inside one node, so that measurements do not include the cost
// of entering the node's namespaces.
type shell struct {
	in  io.WriteCloser
	out *bufio.Reader
}

func startShell(b *bench.Bench, node int) (*shell, error) {
	cmd, err := b.Command(node, "sh")
	if err != nil {
		return nil, err
	}
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
	return &shell{in: in, out: bufio.NewReader(out)}, nil
}

// run sends one script and waits for its single output line.
func (s *shell) run(script string) (string, error) {
	if _, err := fmt.Fprintln(s.in, script); err != nil {
		return "", err
	}
	line, err := s.out.ReadString('\n')
	return strings.TrimSpace(line), err
}

// runCluster measures a quorate 3-node cluster of bin: replication latency (write on node 1
// until node 2 reads the content) and create+write+close throughput on node 1.
func runCluster(bin string, samples, files int) error {
	abs, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	dir, err := os.MkdirTemp("/root", "pmxcfs-clusterbench-")
	if err != nil {
		dir, err = os.MkdirTemp("", "pmxcfs-clusterbench-")
		if err != nil {
			return err
		}
	}
	defer os.RemoveAll(dir)
	b, err := bench.New(bench.Options{Dir: dir, Log: log, Share: []string{filepath.Dir(abs)}})
	if err != nil {
		return err
	}
	defer b.Down()
	if err := b.Up(3); err != nil {
		return err
	}
	if err := b.WaitQuorum(30 * time.Second); err != nil {
		return err
	}
	for i := 1; i <= 3; i++ {
		if err := b.StartPmxcfs(i, abs, "-f"); err != nil {
			return err
		}
	}
	if err := b.WaitPmxcfs(30 * time.Second); err != nil {
		return err
	}
	writer, err := startShell(b, 1)
	if err != nil {
		return err
	}
	reader, err := startShell(b, 2)
	if err != nil {
		return err
	}
	// The first write waits until node 1 is quorate and synced.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := writer.run("mkdir -p /etc/pve/bench 2>/dev/null; echo ok > /etc/pve/bench/ready && echo done || echo fail")
		if out == "done" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster never became writable")
		}
		time.Sleep(200 * time.Millisecond)
	}

	var lat []time.Duration
	for i := 0; i < samples; i++ {
		name := fmt.Sprintf("/etc/pve/bench/lat%d", i)
		// The reader spins on the file's content; the FUSE negative-entry timeout is 0, so it
		// sees the file as soon as node 2 has applied it.
		if _, err := fmt.Fprintf(reader.in, "until [ \"$(cat %s 2>/dev/null)\" = v%d ]; do :; done; echo seen\n", name, i); err != nil {
			return err
		}
		start := time.Now()
		if out, err := writer.run(fmt.Sprintf("echo v%d > %s && echo done", i, name)); err != nil || out != "done" {
			return fmt.Errorf("write %d: %q %v", i, out, err)
		}
		if line, err := reader.out.ReadString('\n'); err != nil || strings.TrimSpace(line) != "seen" {
			return fmt.Errorf("read %d: %q %v", i, line, err)
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })

	out, err := writer.run(fmt.Sprintf(`s=$(date +%%s%%N); i=0; while [ $i -lt %d ]; do echo data > /etc/pve/bench/t$i || break; i=$((i+1)); done; e=$(date +%%s%%N); echo $i $((e-s))`, files))
	if err != nil {
		return err
	}
	fields := strings.Fields(out)
	if len(fields) != 2 {
		return fmt.Errorf("throughput run: %q", out)
	}
	n, _ := strconv.Atoi(fields[0])
	ns, _ := strconv.ParseFloat(fields[1], 64)

	fmt.Printf("3-node cluster (real corosync, one machine), %d samples\n", samples)
	fmt.Printf("  replication latency node1 -> node2: median %.2f ms, p99 %.2f ms\n",
		ms(lat[len(lat)/2]), ms(lat[(len(lat)*99)/100]))
	fmt.Printf("  create+write+close on node1:        %8.0f files/s (%d files)\n", float64(n)/(ns/1e9), n)
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
