// Package rrdfiles writes the RRD values that nodes publish (status keys
// "rrd/...") into the RRD files under /var/lib/rrdcached/db, the way upstream
// pmxcfs does: it picks the 9.0 file for each key, creates missing files with
// upstream's schema, fixes the column count, and writes through rrdcached or
// librrd directly.
package rrdfiles

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pmxcfs-go/pmxcfs/rrd"
	"github.com/sirupsen/logrus"
)

// Defaults used by upstream.
const (
	DefaultBaseDir = "/var/lib/rrdcached/db"
	DefaultSocket  = "unix:/var/run/rrdcached.sock"
)

// Writer writes RRD values on one background goroutine so callers (the IPC
// and CPG goroutines) never wait for the disk or rrdcached. Its queue is
// unbounded: no update is dropped. The zero value is ready to use with the
// defaults; set fields before the first Update.
type Writer struct {
	BaseDir string        // DefaultBaseDir if empty
	Socket  string        // rrdcached address, DefaultSocket if empty
	Log     *logrus.Entry // logrus standard logger if nil
	Now     func() time.Time

	mu      sync.Mutex
	idle    sync.Cond // signalled when the queue is empty and nothing is being written
	queue   []update
	running bool // the worker goroutine exists
	busy    bool // the worker is writing an update it has taken off the queue
}

type update struct {
	key   string
	value []byte
}

// Update queues one value (the key after "rrd/", the raw NUL-terminated
// value) and returns at once. It is safe for concurrent use.
func (w *Writer) Update(key string, value []byte) {
	u := update{key: key, value: append([]byte(nil), value...)}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.queue = append(w.queue, u)
	if !w.running {
		w.running = true
		go w.run()
	}
}

// Flush waits until every update queued so far has been written.
func (w *Writer) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.idle.L = &w.mu
	for len(w.queue) > 0 || w.busy {
		w.idle.Wait()
	}
}

// run writes queued updates in order and exits when the queue is empty; the
// next Update starts a new one, so an idle Writer holds no goroutine.
func (w *Writer) run() {
	w.mu.Lock()
	for len(w.queue) > 0 {
		batch := w.queue
		w.queue = nil
		w.busy = true
		w.mu.Unlock()
		for _, u := range batch {
			w.write(u.key, u.value)
		}
		w.mu.Lock()
		w.busy = false
	}
	w.running = false
	w.idle.L = &w.mu
	w.idle.Broadcast()
	w.mu.Unlock()
}

func (w *Writer) log() *logrus.Entry {
	if w.Log != nil {
		return w.Log
	}
	return logrus.NewEntry(logrus.StandardLogger())
}

func (w *Writer) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

func (w *Writer) write(key string, value []byte) {
	t, err := parse(key, value)
	if err != nil {
		w.log().Errorf("RRD update error: %v %s", err, key)
		return
	}
	base := w.BaseDir
	if base == "" {
		base = DefaultBaseDir
	}
	file := filepath.Join(base, filepath.FromSlash(t.file))
	if _, err := os.Stat(file); err != nil {
		w.create(base, t, file)
	}

	socket := w.Socket
	if socket == "" {
		socket = DefaultSocket
	}
	if rrd.DaemonConnect(socket) == nil {
		err := rrd.DaemonUpdate(file, t.value)
		if err == nil {
			return
		}
		w.log().Infof("RRDC update error %s: %v", file, err)
		rrd.DaemonDisconnect()
	}
	if err := rrd.Update(file, t.value); err != nil {
		w.log().Infof("RRD update error %s: %v", file, err)
	}
}

// create makes the type and parent directories (0750, not their parents:
// the base directory belongs to the rrdcached package) and a new file whose
// first row starts at local midnight today, like upstream.
func (w *Writer) create(base string, t target, file string) {
	for _, dir := range []string{filepath.Join(base, t.typeDir), filepath.Dir(file)} {
		if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
			w.log().Infof("could not create directory %s: %v", dir, err)
		}
	}
	now := w.now().Local()
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.Local)
	if err := rrd.Create(file, step, midnight, definitions(t.sources)); err != nil {
		w.log().Infof("RRD create error %s: %v", file, err)
	}
}
