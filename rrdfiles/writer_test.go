package rrdfiles

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/rrd"
	"github.com/sirupsen/logrus"
)

// Upstream's definitions, as written in status.c (rrd_def_*_pve9_0).
var upstreamRRAs = []string{
	"RRA:AVERAGE:0.5:1:1440", "RRA:AVERAGE:0.5:30:1440", "RRA:AVERAGE:0.5:360:1440",
	"RRA:AVERAGE:0.5:10080:570", "RRA:MAX:0.5:1:1440", "RRA:MAX:0.5:30:1440",
	"RRA:MAX:0.5:360:1440", "RRA:MAX:0.5:10080:570",
}

var upstreamNode = append([]string{
	"DS:loadavg:GAUGE:120:0:U", "DS:maxcpu:GAUGE:120:0:U", "DS:cpu:GAUGE:120:0:U",
	"DS:iowait:GAUGE:120:0:U", "DS:memtotal:GAUGE:120:0:U", "DS:memused:GAUGE:120:0:U",
	"DS:swaptotal:GAUGE:120:0:U", "DS:swapused:GAUGE:120:0:U", "DS:roottotal:GAUGE:120:0:U",
	"DS:rootused:GAUGE:120:0:U", "DS:netin:DERIVE:120:0:U", "DS:netout:DERIVE:120:0:U",
	"DS:memavailable:GAUGE:120:0:U", "DS:arcsize:GAUGE:120:0:U",
	"DS:pressurecpusome:GAUGE:120:0:U", "DS:pressureiosome:GAUGE:120:0:U",
	"DS:pressureiofull:GAUGE:120:0:U", "DS:pressurememorysome:GAUGE:120:0:U",
	"DS:pressurememoryfull:GAUGE:120:0:U",
}, upstreamRRAs...)

var upstreamVM = append([]string{
	"DS:maxcpu:GAUGE:120:0:U", "DS:cpu:GAUGE:120:0:U", "DS:maxmem:GAUGE:120:0:U",
	"DS:mem:GAUGE:120:0:U", "DS:maxdisk:GAUGE:120:0:U", "DS:disk:GAUGE:120:0:U",
	"DS:netin:DERIVE:120:0:U", "DS:netout:DERIVE:120:0:U", "DS:diskread:DERIVE:120:0:U",
	"DS:diskwrite:DERIVE:120:0:U", "DS:memhost:GAUGE:120:0:U",
	"DS:pressurecpusome:GAUGE:120:0:U", "DS:pressurecpufull:GAUGE:120:0:U",
	"DS:pressureiosome:GAUGE:120:0:U", "DS:pressureiofull:GAUGE:120:0:U",
	"DS:pressurememorysome:GAUGE:120:0:U", "DS:pressurememoryfull:GAUGE:120:0:U",
}, upstreamRRAs...)

var upstreamStorage = append([]string{"DS:total:GAUGE:120:0:U", "DS:used:GAUGE:120:0:U"}, upstreamRRAs...)

func needRRDTool(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("rrdtool"); err != nil {
		t.Skip("rrdtool not installed")
	}
}

func rrdtool(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("rrdtool", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rrdtool %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// schemaOf reads a file's step and its definitions back in rrd_create syntax.
func schemaOf(t *testing.T, file string) (step string, defs []string) {
	info := map[string]string{}
	for _, line := range strings.Split(rrdtool(t, "info", file), "\n") {
		if k, v, ok := strings.Cut(line, " = "); ok {
			info[k] = strings.Trim(v, `"`)
		}
	}
	num := func(s string) string {
		if s == "NaN" {
			return "U"
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("bad number %q", s)
		}
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	var names []string
	for k, v := range info {
		if name, ok := strings.CutPrefix(k, "ds["); ok && strings.HasSuffix(k, "].index") {
			i, _ := strconv.Atoi(v)
			for len(names) <= i {
				names = append(names, "")
			}
			names[i] = strings.TrimSuffix(name, "].index")
		}
	}
	for _, n := range names {
		p := "ds[" + n + "]."
		defs = append(defs, fmt.Sprintf("DS:%s:%s:%s:%s:%s", n, info[p+"type"],
			info[p+"minimal_heartbeat"], num(info[p+"min"]), num(info[p+"max"])))
	}
	for i := 0; ; i++ {
		p := fmt.Sprintf("rra[%d].", i)
		if _, ok := info[p+"cf"]; !ok {
			break
		}
		defs = append(defs, fmt.Sprintf("RRA:%s:%s:%s:%s", info[p+"cf"], num(info[p+"xff"]),
			info[p+"pdp_per_row"], info[p+"rows"]))
	}
	return info["step"], defs
}

// lastValue is the "timestamp: v1 v2 ..." line of rrdtool lastupdate.
func lastValue(t *testing.T, file string, args ...string) string {
	lines := strings.Split(strings.TrimSpace(rrdtool(t, append([]string{"lastupdate"}, append(args, file)...)...)), "\n")
	return lines[len(lines)-1]
}

func newTestWriter(t *testing.T) (*Writer, *bytes.Buffer) {
	logs := &bytes.Buffer{}
	logger := logrus.New()
	logger.SetOutput(logs)
	return &Writer{
		BaseDir: t.TempDir(),
		Socket:  "unix:" + filepath.Join(t.TempDir(), "missing.sock"),
		Log:     logrus.NewEntry(logger),
	}, logs
}

func TestWriteDirect(t *testing.T) {
	needRRDTool(t)
	w, logs := newTestWriter(t)
	ts := time.Now().Unix()
	u := func(n int) string { return strings.TrimSuffix(strings.Repeat("U ", n), " ") }
	cases := []struct {
		key, value, file string
		defs             []string
		last             string
	}{
		{"pve2-node/old", fmt.Sprintf("100:0:%d:1:2:3:4:5:6:7:8:9:10:11:12", ts), "pve-node-9.0/old",
			upstreamNode, fmt.Sprintf("%d: 1 2 3 4 5 6 7 8 9 10 11 12 %s", ts, u(7))},
		{"pve-node-9.0/cur", fmt.Sprintf("100:0:%d:1:2:3:4:5:6:7:8:9:10:11:12:13:14:15:16:17:18:19", ts),
			"pve-node-9.0/cur", upstreamNode, fmt.Sprintf("%d: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19", ts)},
		{"pve-node-10.0/new", fmt.Sprintf("100:0:%d:1:2:3:4:5:6:7:8:9:10:11:12:13:14:15:16:17:18:19:20:21", ts),
			"pve-node-9.0/new", upstreamNode, fmt.Sprintf("%d: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19", ts)},
		{"pve2.3-vm/100", fmt.Sprintf("5:vm:running:0:%d:1:2:3:4:5:6:7:8:9:10", ts), "pve-vm-9.0/100",
			upstreamVM, fmt.Sprintf("%d: 1 2 3 4 5 6 7 8 9 10 %s", ts, u(7))},
		{"pve-vm-9.0/101", fmt.Sprintf("5:vm:running:0:%d:1:2:3:4:5:6:7:8:9:10:11:12:13:14:15:16:17", ts),
			"pve-vm-9.0/101", upstreamVM, fmt.Sprintf("%d: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17", ts)},
		{"pve-vm-9.5/102", fmt.Sprintf("5:vm:running:0:%d:1:2:3:4:5:6:7:8:9:10:11:12:13:14:15:16:17:18", ts),
			"pve-vm-9.0/102", upstreamVM, fmt.Sprintf("%d: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17", ts)},
		{"pve2-storage/n1/local", fmt.Sprintf("%d:1000:500", ts), "pve-storage-9.0/n1/local",
			upstreamStorage, fmt.Sprintf("%d: 1000 500", ts)},
		{"pve-storage-9.0/n1/zfs", fmt.Sprintf("%d:1000:500", ts), "pve-storage-9.0/n1/zfs",
			upstreamStorage, fmt.Sprintf("%d: 1000 500", ts)},
		{"pve-storage-9.3/n2/nfs", fmt.Sprintf("%d:1000:500:7", ts), "pve-storage-9.0/n2/nfs",
			upstreamStorage, fmt.Sprintf("%d: 1000 500", ts)},
	}
	for _, c := range cases {
		w.Update(c.key, append([]byte(c.value), 0))
	}
	w.Flush()
	for _, c := range cases {
		file := filepath.Join(w.BaseDir, c.file)
		step, defs := schemaOf(t, file)
		if step != "60" || strings.Join(defs, " ") != strings.Join(c.defs, " ") {
			t.Errorf("%s: step %s defs\n%v\nwant step 60\n%v", c.key, step, defs, c.defs)
		}
		if got := lastValue(t, file); got != c.last {
			t.Errorf("%s: lastupdate %q, want %q", c.key, got, c.last)
		}
	}
	for _, dir := range []string{"pve-node-9.0", "pve-vm-9.0", "pve-storage-9.0", "pve-storage-9.0/n1"} {
		st, err := os.Stat(filepath.Join(w.BaseDir, dir))
		if err != nil || st.Mode().Perm() != 0o750 {
			t.Errorf("%s: %v %v, want a 0750 directory", dir, st, err)
		}
	}
	if logs.Len() != 0 {
		t.Errorf("unexpected log output:\n%s", logs)
	}
}

func TestCreateStartsAtLocalMidnight(t *testing.T) {
	needRRDTool(t)
	w, _ := newTestWriter(t)
	now := time.Date(2025, 3, 4, 15, 16, 17, 0, time.Local)
	w.Now = func() time.Time { return now }
	tg, err := parse("pve2-storage/n1/local", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.create(w.BaseDir, tg, filepath.Join(w.BaseDir, tg.file))
	last := rrdtool(t, "last", filepath.Join(w.BaseDir, tg.file))
	want := time.Date(2025, 3, 4, 0, 0, 0, 0, time.Local).Unix()
	if strings.TrimSpace(last) != strconv.FormatInt(want, 10) {
		t.Errorf("start %s, want %d", last, want)
	}
}

func TestWrongKeysIgnored(t *testing.T) {
	needRRDTool(t)
	w, logs := newTestWriter(t)
	bad := []string{"pve2-node/", "pve2-node/a/b", "pve-node-9.0", "foo/bar", "pve2-storage/n1",
		"pve2-storage/n1/", "pve2.3-vm/1/2", "pve2.3-vm/.."}
	for _, key := range bad {
		w.Update(key, []byte("1700000000:1:2\x00"))
	}
	w.Flush()
	var files []string
	filepath.WalkDir(w.BaseDir, func(p string, d fs.DirEntry, err error) error {
		if p != w.BaseDir {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Errorf("bad keys created %v", files)
	}
	if n := strings.Count(logs.String(), "RRD update error: unknown/wrong key"); n != len(bad) {
		t.Errorf("%d wrong-key messages, want %d:\n%s", n, len(bad), logs)
	}
}

// A burst of updates is written in order and none is dropped.
func TestUpdateDoesNotLose(t *testing.T) {
	needRRDTool(t)
	w, _ := newTestWriter(t)
	start := time.Now().Unix() - 1000
	for i := int64(0); i < 200; i++ {
		w.Update("pve2-storage/n1/local", []byte(fmt.Sprintf("%d:%d:1\x00", start+i, i)))
	}
	w.Flush()
	want := fmt.Sprintf("%d: 199 1", start+199)
	if got := lastValue(t, filepath.Join(w.BaseDir, "pve-storage-9.0/n1/local")); got != want {
		t.Errorf("lastupdate %q, want %q", got, want)
	}
}

// With rrdcached reachable, values go to the daemon (they stay in its cache
// until flushed) rather than to the file directly.
func TestWriteThroughRRDCached(t *testing.T) {
	needRRDTool(t)
	bin, err := exec.LookPath("rrdcached")
	if err != nil {
		t.Skip("rrdcached not installed")
	}
	w, logs := newTestWriter(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "c.sock")
	cmd := exec.Command(bin, "-g", "-l", "unix:"+sock, "-p", filepath.Join(dir, "pid"),
		"-b", w.BaseDir, "-w", "3600", "-z", "1")
	if err := cmd.Start(); err != nil {
		t.Skipf("rrdcached: %v", err)
	}
	t.Cleanup(func() {
		rrd.DaemonDisconnect()
		cmd.Process.Kill()
		cmd.Wait()
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 100 {
			t.Skip("rrdcached did not open its socket")
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.Socket = "unix:" + sock
	ts := time.Now().Unix()
	w.Update("pve2-storage/n1/local", []byte(fmt.Sprintf("%d:1000:500\x00", ts)))
	w.Flush()
	file := filepath.Join(w.BaseDir, "pve-storage-9.0/n1/local")
	if got := strings.TrimSpace(rrdtool(t, "last", file)); got == strconv.FormatInt(ts, 10) {
		t.Errorf("file updated directly, rrdcached bypassed")
	}
	want := fmt.Sprintf("%d: 1000 500", ts)
	if got := lastValue(t, file, "--daemon", "unix:"+sock); got != want {
		t.Errorf("lastupdate via daemon %q, want %q", got, want)
	}
	if got := lastValue(t, file); got != want {
		t.Errorf("lastupdate after flush %q, want %q", got, want)
	}
	if logs.Len() != 0 {
		t.Errorf("unexpected log output:\n%s", logs)
	}
}
