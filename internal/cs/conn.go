package cs

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/internal/fdwait"
)

// Lib is what a binding supplies for one connection: closures around its library's calls
// on the connection's C handle (read when called, so they may refer to a handle that the
// init function of Open fills in).
type Lib struct {
	// Name is the library's prefix in operation names: "cpg" gives "cpg_dispatch".
	Name     string
	FdGet    func() (int, Code)
	Dispatch func() Code // <name>_dispatch(handle, CS_DISPATCH_ALL)
	Finalize func() Code
	// DispatchPolicy is the retry policy of Dispatch (upstream's differs per library).
	DispatchPolicy Policy
}

// Conn is the life cycle every binding shares: calls enter a guard, so Close may come at
// any time (from another goroutine or a callback) and the C handle is finalized only once
// no call is inside it; callbacks find their Go value through a registry key; Run is the
// poll-and-dispatch loop.
type Conn struct {
	lib  Lib
	g    *guard
	log  logrus.FieldLogger
	keys []uintptr // registry entries dropped at finalize; guarded by registry.mu
	fd   int       // the connection's descriptor once Wait learned it, else -1; Wait's own
}

// Open connects: it registers owner (when not nil) and calls init with its registry key, to
// be handed to corosync as the callback context. init runs the library's initialize and
// must leave nothing open when it fails.
func Open(lib Lib, owner any, init func(key uintptr) error) (*Conn, error) {
	c := &Conn{lib: lib, log: logrus.StandardLogger(), fd: -1}
	var key uintptr
	if owner != nil {
		key = c.Register(owner)
	}
	if err := init(key); err != nil {
		c.dropKeys()
		return nil, err
	}
	g, err := newGuard(c.finalize)
	if err != nil {
		lib.Finalize()
		c.dropKeys()
		return nil, err
	}
	c.g = g
	return c, nil
}

func (c *Conn) finalize() {
	if err := Check(c.lib.Name+"_finalize", c.lib.Finalize()); err != nil {
		c.log.Debugf("%v", err)
	}
	c.dropKeys()
}

// SetLogger sets where retry and binding messages go (default: the logrus standard
// logger). Call it before the connection is used.
func (c *Conn) SetLogger(l logrus.FieldLogger) { c.log = l }

// Log is the connection's logger.
func (c *Conn) Log() logrus.FieldLogger { return c.log }

// Close finalizes the handle once no call is using it any more. It is safe to call more
// than once, concurrently with Run and from a callback; later calls fail with
// ErrBadHandle and callbacks are no longer delivered.
func (c *Conn) Close() { c.g.Close() }

// Use runs f under the guard; on a closed connection it returns Closed(op) instead.
func (c *Conn) Use(op string, f func() error) error {
	if !c.g.Enter() {
		return Closed(op)
	}
	defer c.g.Leave()
	return f()
}

// Call runs one library call under the guard.
func (c *Conn) Call(op string, f func() Code) error {
	return c.Use(op, func() error { return Check(op, f()) })
}

// Retry runs a library call under the guard with policy p; each attempt enters the guard
// anew, so Close is not held up by a retry loop. A cancelled ctx ends the retries with an
// error that matches both the last code and ctx.Err().
func (c *Conn) Retry(ctx context.Context, op string, p Policy, f func() Code) error {
	closed := false
	code := OK
	retries, err := p.Run(c.log, op, Sleep(ctx), func() bool {
		if !c.g.Enter() {
			closed = true
			return false
		}
		defer c.g.Leave()
		code = f()
		return code == ErrTryAgain
	})
	if closed {
		return Closed(op)
	}
	if err != nil {
		return fmt.Errorf("%w (gave up after %d retries: %w)", Check(op, code), retries, err)
	}
	return Check(op, code)
}

// Wait blocks until the connection's descriptor has work for Dispatch or hangs up, and
// returns its events; zero events when woken (Wake, Close) or at deadline (the zero time:
// none). It waits through the runtime's poller (internal/fdwait), so no thread is held
// meanwhile. Run is the loop for a client without one of its own (cluster.Group.Run has
// one: its timer and batches). A closed connection gives Closed. One Wait at a time.
func (c *Conn) Wait(deadline time.Time) (fdwait.Events, error) {
	op := c.lib.Name + "_fd_get"
	if !c.g.Enter() {
		return 0, Closed(op)
	}
	defer c.g.Leave()
	// A connection keeps its descriptor, so one C call learns it, not one per wait.
	if c.fd < 0 {
		fd, code := c.lib.FdGet()
		if err := Check(op, code); err != nil {
			return 0, err
		}
		c.fd = fd
	}
	return c.g.Wait(c.fd, deadline)
}

// Wake makes a Wait in progress, or the next one, return zero events.
func (c *Conn) Wake() { c.g.Wake() }

// Dispatch delivers every pending callback without blocking, retrying TRY_AGAIN with the
// library's policy until ctx is done.
func (c *Conn) Dispatch(ctx context.Context) error {
	return c.Retry(ctx, c.lib.Name+"_dispatch", c.lib.DispatchPolicy, c.lib.Dispatch)
}

// Run waits for the connection's fd and dispatches until ctx is done (returns ctx.Err()),
// the connection is closed (returns nil) or dispatching fails. A hang-up that dispatch does
// not report itself becomes an ErrLibrary error, so a dead corosync never turns into a busy
// loop. Only one Run per connection.
func (c *Conn) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, c.g.Wake)
	defer stop()
	op := c.lib.Name + "_dispatch"
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rev, err := c.Wait(time.Time{})
		if c.g.Closing() {
			return nil
		}
		if err != nil {
			return err
		}
		if rev == 0 {
			continue // woken: recheck ctx and closing
		}
		if err := c.Dispatch(ctx); err != nil {
			if c.g.Closing() {
				return nil
			}
			return err
		}
		if rev.HangUp() {
			return &Error{Op: op, Code: ErrLibrary, Detail: "connection to corosync lost"}
		}
	}
}

// The registry maps the numbers handed to corosync as callback contexts to Go values. A
// lookup (rather than a runtime/cgo.Handle, whose Value panics once deleted) lets a callback
// that races with Close or with the removal of its entry be dropped, and keeps this package
// free of cgo.
var registry = struct {
	mu      sync.Mutex
	next    uintptr
	entries map[uintptr]registered
}{entries: map[uintptr]registered{}}

type registered struct {
	c *Conn
	v any
}

// Register makes v findable by Lookup under the returned key (never 0) until Unregister or
// the connection's finalize.
func (c *Conn) Register(v any) uintptr {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	registry.next++
	registry.entries[registry.next] = registered{c, v}
	c.keys = append(c.keys, registry.next)
	return registry.next
}

// Unregister drops key; callbacks with it are ignored from now on.
func (c *Conn) Unregister(key uintptr) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	delete(registry.entries, key)
	c.keys = slices.DeleteFunc(c.keys, func(k uintptr) bool { return k == key })
}

func (c *Conn) dropKeys() {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	for _, k := range c.keys {
		delete(registry.entries, k)
	}
	c.keys = nil
}

// Lookup returns the value registered under key for a callback: false if there is none, it
// is of another type, or its connection is closing (no callback runs after Close).
func Lookup[T any](key uintptr) (T, bool) {
	registry.mu.Lock()
	e, ok := registry.entries[key]
	registry.mu.Unlock()
	v, isT := e.v.(T)
	if !ok || !isT || e.c.g == nil || e.c.g.Closing() {
		var zero T
		return zero, false
	}
	return v, true
}
