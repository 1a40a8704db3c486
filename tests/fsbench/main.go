// Command fsbench measures a local-mode pmxcfs through its real FUSE mount: create+write+close
// and read+stat throughput of small files, and the daemon's peak memory. It prints figures
// only; it asserts nothing.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("bin", "bin/pmxcfs", "pmxcfs binary")
	files := flag.Int("files", 10000, "number of files")
	size := flag.Int("size", 1024, "file size in bytes")
	cluster := flag.Bool("cluster", false, "measure a 3-node cluster instead of local mode")
	samples := flag.Int("samples", 200, "replication latency samples (with -cluster)")
	flag.Parse()
	if *cluster {
		if err := runCluster(*bin, *samples, *files/10); err != nil {
			fmt.Fprintln(os.Stderr, "fsbench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*bin, *files, *size); err != nil {
		fmt.Fprintln(os.Stderr, "fsbench:", err)
		os.Exit(1)
	}
}

func run(bin string, files, size int) error {
	dir, err := os.MkdirTemp("", "pmxcfs-fsbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	mount := filepath.Join(dir, "pve")
	runDir := filepath.Join(dir, "run")
	cmd := exec.Command(bin, "-l", "--mount", mount, "--db", filepath.Join(dir, "lib", "config.db"),
		"--run-dir", runDir, "--nodename", "bench", "--node-ip", "192.0.2.1")
	cmd.Env = append(os.Environ(), "PMXCFS_NO_SYSLOG=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("start: %v\n%s", err, out)
	}
	pidText, err := os.ReadFile(runDir + ".pid")
	if err != nil {
		return err
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidText)))
	defer func() {
		syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 200 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
		syscall.Unmount(mount, syscall.MNT_DETACH)
	}()

	content := bytes.Repeat([]byte("x"), size)
	os.Mkdir(filepath.Join(mount, "bench"), 0755)
	name := func(i int) string { return filepath.Join(mount, "bench", fmt.Sprintf("f%05d.cfg", i)) }

	start := time.Now()
	for i := 0; i < files; i++ {
		if err := os.WriteFile(name(i), content, 0640); err != nil {
			return err
		}
	}
	writeSecs := time.Since(start).Seconds()

	start = time.Now()
	for i := 0; i < files; i++ {
		if _, err := os.Stat(name(i)); err != nil {
			return err
		}
		data, err := os.ReadFile(name(i))
		if err != nil || len(data) != size {
			return fmt.Errorf("read back %d: %v", i, err)
		}
	}
	readSecs := time.Since(start).Seconds()

	fmt.Printf("local mode, %d files of %d bytes through FUSE\n", files, size)
	fmt.Printf("  create+write+close: %8.0f files/s (%.2f s)\n", float64(files)/writeSecs, writeSecs)
	fmt.Printf("  stat+read:          %8.0f files/s (%.2f s)\n", float64(files)/readSecs, readSecs)
	fmt.Printf("  daemon peak RSS:    %s\n", peakRSS(pid))
	return nil
}

func peakRSS(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:"))
		}
	}
	return "unknown"
}
