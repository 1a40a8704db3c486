package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, which the kernel fixes at
// 100 on every architecture Proxmox runs on.
const userHZ = 100

// parseStatCPU returns utime+stime (in clock ticks) of a /proc/PID/stat line: fields 14 and
// 15, counted after the parenthesised command name, which may itself hold spaces and ')'.
func parseStatCPU(stat string) (uint64, error) {
	k := strings.LastIndexByte(stat, ')')
	if k < 0 {
		return 0, fmt.Errorf("stat: no command name in %q", stat)
	}
	f := strings.Fields(stat[k+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name", len(f))
	}
	utime, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat utime: %w", err)
	}
	stime, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat stime: %w", err)
	}
	return utime + stime, nil
}

// parseKeyValue returns the number after "key:" in a /proc file of "key: value [unit]" lines
// (status, io).
func parseKeyValue(text, key string) (uint64, error) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != key {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, fmt.Errorf("%s: no value", key)
		}
		return strconv.ParseUint(f[0], 10, 64)
	}
	return 0, fmt.Errorf("%s: not found", key)
}

// procSample is what the bench reads of a daemon around a phase.
type procSample struct {
	cpuTicks   uint64 // utime+stime of all threads
	writeBytes uint64 // bytes the process caused to be written to storage (/proc/PID/io)
	rssKB      uint64 // VmRSS
	hwmKB      uint64 // VmHWM, the peak RSS
	switches   uint64 // voluntary+involuntary context switches of all threads alive now
}

func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	if s.cpuTicks, err = parseStatCPU(string(stat)); err != nil {
		return s, err
	}
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return s, err
	}
	if s.writeBytes, err = parseKeyValue(string(io), "write_bytes"); err != nil {
		return s, err
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	if s.rssKB, err = parseKeyValue(string(status), "VmRSS"); err != nil {
		return s, err
	}
	if s.hwmKB, err = parseKeyValue(string(status), "VmHWM"); err != nil {
		return s, err
	}
	s.switches, err = contextSwitches(pid)
	return s, err
}

// contextSwitches sums the context switches of the threads of pid. On a virtual machine a
// switch costs the hypervisor far more than the work most FUSE requests do, so this count
// explains most of a daemon's CPU per request. A thread that ended in between takes its count
// with it (libfuse ends a worker only when more than ten are idle), so the figure is a lower
// bound.
func contextSwitches(pid int) (uint64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var sum uint64
	for _, t := range tasks {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread ended
		}
		for _, key := range []string{"voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"} {
			n, err := parseKeyValue(string(status), key)
			if err != nil {
				return 0, err
			}
			sum += n
		}
	}
	return sum, nil
}

// cpuMicros converts a tick difference into microseconds.
func cpuMicros(ticks uint64) float64 { return float64(ticks) * 1e6 / userHZ }
