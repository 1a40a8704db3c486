package main

import (
	"os"
	"runtime/trace"
)

// envTrace names a file that receives a Go execution trace of the whole run, from start-up
// to a clean exit (`go tool trace FILE`): the way to see what a slow FUSE or IPC request
// waited for (a lock, the scheduler, a GC assist). Off unless set; a trace costs some CPU
// and grows by megabytes a minute under load.
const envTrace = "PMXCFS_TRACE"

// startTrace starts the trace envTrace asks for and returns what ends it.
func startTrace() func() {
	path := os.Getenv(envTrace)
	if path == "" {
		return func() {}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		log.WithError(err).Warnf("%s: not tracing", envTrace)
		return func() {}
	}
	if err := trace.Start(f); err != nil {
		log.WithError(err).Warnf("%s: not tracing", envTrace)
		f.Close()
		return func() {}
	}
	log.Infof("writing an execution trace to %s", path)
	return func() {
		trace.Stop()
		f.Close()
	}
}
