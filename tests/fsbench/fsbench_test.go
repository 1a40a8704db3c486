package main

import (
	"bytes"
	"math"
	"os"
	"path"
	"strings"
	"testing"
)

func TestMedianAndPercentile(t *testing.T) {
	for _, c := range []struct {
		xs     []float64
		median float64
		p99    float64
		p50    float64
	}{
		{[]float64{3}, 3, 3, 3},
		{[]float64{5, 1, 3}, 3, 5, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 4, 2},
		{[]float64{10, 10, 1, 1}, 5.5, 10, 1},
	} {
		in := append([]float64(nil), c.xs...)
		if got := median(c.xs); got != c.median {
			t.Errorf("median(%v) = %v, want %v", in, got, c.median)
		}
		if got := percentile(c.xs, 99); got != c.p99 {
			t.Errorf("percentile(%v, 99) = %v, want %v", in, got, c.p99)
		}
		if got := percentile(c.xs, 50); got != c.p50 {
			t.Errorf("percentile(%v, 50) = %v, want %v", in, got, c.p50)
		}
		for i := range in {
			if c.xs[i] != in[i] {
				t.Fatalf("median/percentile reordered their input: %v", c.xs)
			}
		}
	}
	// 200 samples 1..200: the 99th percentile by nearest rank is the 198th value.
	var xs []float64
	for i := 200; i >= 1; i-- {
		xs = append(xs, float64(i))
	}
	if got := percentile(xs, 99); got != 198 {
		t.Errorf("p99 of 1..200 = %v, want 198", got)
	}
	if !math.IsNaN(median(nil)) || !math.IsNaN(percentile(nil, 99)) {
		t.Error("median/percentile of nothing should be NaN")
	}
}

func TestFormatTable(t *testing.T) {
	rows := []row{
		{figure{"a", "create (files/s)", true}, 4000, 6000},
		{figure{"b", "latency, median (ms)", false}, 5.8, 8.7},
		{figure{"c", "ours only (us)", false}, math.NaN(), 0.1234},
	}
	got := formatTable(rows)
	want := "" +
		"| figure               | upstream |  ours | ours/upstream | better |\n" +
		"| -------------------- | -------: | ----: | ------------: | -----: |\n" +
		"| create (files/s)     |     4000 |  6000 |          1.50 | higher |\n" +
		"| latency, median (ms) |     5.80 |  8.70 |          1.50 |  lower |\n" +
		"| ours only (us)       |        - | 0.123 |             - |  lower |\n"
	if got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
	for v, s := range map[float64]string{1234.5: "1234", 56.78: "56.8", 3.14159: "3.14", 0.01234: "0.012", math.Inf(1): "-"} {
		if got := formatValue(v); got != s {
			t.Errorf("formatValue(%v) = %q, want %q", v, got, s)
		}
	}
	if got := ratio(row{upstream: 0, ours: 1}); got != "-" {
		t.Errorf("ratio with upstream 0 = %q", got)
	}
}

func TestParseProc(t *testing.T) {
	// A command name with spaces and a ')' must not shift the fields.
	stat := "4242 (pmx cfs) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 731 269 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615"
	ticks, err := parseStatCPU(stat)
	if err != nil || ticks != 1000 {
		t.Errorf("parseStatCPU = %d, %v; want 1000", ticks, err)
	}
	if _, err := parseStatCPU("4242 (short) S 1 2"); err == nil {
		t.Error("parseStatCPU accepted a truncated line")
	}
	if got := cpuMicros(3); got != 30000 {
		t.Errorf("cpuMicros(3) = %v, want 30000", got)
	}
	status := "Name:\tpmxcfs\nVmPeak:\t  999 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   19000 kB\nThreads:\t9\n"
	for key, want := range map[string]uint64{"VmHWM": 20480, "VmRSS": 19000, "Threads": 9} {
		if got, err := parseKeyValue(status, key); err != nil || got != want {
			t.Errorf("%s = %d, %v; want %d", key, got, err, want)
		}
	}
	io := "rchar: 100\nwchar: 200\nsyscr: 3\nsyscw: 4\nread_bytes: 0\nwrite_bytes: 268435456\ncancelled_write_bytes: 4096\n"
	if got, err := parseKeyValue(io, "write_bytes"); err != nil || got != 268435456 {
		t.Errorf("write_bytes = %d, %v", got, err)
	}
	if _, err := parseKeyValue(io, "VmHWM"); err == nil {
		t.Error("parseKeyValue found a missing key")
	}
	// The real files of this process parse.
	if s, err := readProc(os.Getpid()); err != nil || s.hwmKB == 0 || s.rssKB == 0 {
		t.Errorf("readProc(self) = %+v, %v", s, err)
	}
}

func TestPlanResync(t *testing.T) {
	for _, entries := range []int{4, 1000, 5000, 50000} {
		l, err := planResync(entries, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(l.meta.Entries) != entries {
			t.Errorf("%d: planned %d entries", entries, len(l.meta.Entries))
		}
		byPath := map[string]dumpEntry{}
		for i, e := range l.meta.Entries {
			if e.Inode != uint64(i+1) || e.Version != e.Inode {
				t.Fatalf("%d: entry %d has inode %d version %d", entries, i, e.Inode, e.Version)
			}
			parent := uint64(0)
			if dir := path.Dir(e.Path); dir != "." {
				p, ok := byPath[dir]
				if !ok || p.Type != "dir" {
					t.Fatalf("%d: %s comes before its directory", entries, e.Path)
				}
				parent = p.Inode
			}
			if e.Parent != parent {
				t.Fatalf("%d: %s has parent %d, want %d", entries, e.Path, e.Parent, parent)
			}
			byPath[e.Path] = e
		}
		last := l.meta.Entries[len(l.meta.Entries)-1]
		if l.marker != last.Path || last.Type != "file" || l.meta.Root.Version != last.Inode {
			t.Errorf("%d: marker %s, last entry %+v, root version %d", entries, l.marker, last, l.meta.Root.Version)
		}
		if l.below != entries-2 || !strings.HasPrefix(l.marker, resyncTop+"/") {
			t.Errorf("%d: below %d, marker %s", entries, l.below, l.marker)
		}
	}
	if _, err := planResync(3, 1); err == nil {
		t.Error("planResync(3) should fail")
	}
}

func TestContent(t *testing.T) {
	a, b := content(2048, 1), content(2048, 2)
	if len(a) != 2048 || bytes.Equal(a, b) || !bytes.Equal(a, content(2048, 1)) {
		t.Error("content must be sized, deterministic and differ per index")
	}
	if len(content(1, 12345)) != 1 {
		t.Error("content(1) has the wrong size")
	}
}
