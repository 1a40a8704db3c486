// Package votequorum binds corosync's quorum libraries: libquorum, which
// pmxcfs uses to follow whether the node is quorate, and libvotequorum, which
// answers the vote questions of `pvecm status` and sets expected votes.
package votequorum

/*
#cgo LDFLAGS: -lquorum -lvotequorum
#include <stdint.h>
#include <corosync/quorum.h>

cs_error_t pmx_quorum_initialize(quorum_handle_t *handle, uint32_t *type, uintptr_t ctx);
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"runtime/cgo"
	"unsafe"

	"github.com/pmxcfs-go/pmxcfs/internal/cs"
	"github.com/sirupsen/logrus"
)

// Error and Code are the shared corosync error types; errors.Is(err,
// ErrLibrary) and friends work on every error returned here.
type (
	Error = cs.Error
	Code  = cs.Code
)

// Sentinels for errors.Is.
const (
	ErrLibrary      = cs.ErrLibrary
	ErrTryAgain     = cs.ErrTryAgain
	ErrBadHandle    = cs.ErrBadHandle
	ErrInvalidParam = cs.ErrInvalidParam
	ErrNotExist     = cs.ErrNotExist
	ErrAccess       = cs.ErrAccess
)

// ErrNoQuorumProvider means corosync runs without a quorum provider
// (quorum_initialize reported QUORUM_FREE), which upstream treats as an error.
var ErrNoQuorumProvider = errors.New("quorum: quorum_initialize: no quorum provider (quorum_type is not QUORUM_SET)")

// Upstream logs a dispatch retry every 100 attempts (quorum.c).
const dispatchLogEvery = 100

// Notification is one quorum change: whether this partition is quorate and
// which nodes are in it.
type Notification struct {
	Quorate bool
	RingSeq uint64
	Nodes   []uint32
}

// Quorum is one libquorum connection.
type Quorum struct {
	c      C.quorum_handle_t
	notify func(Notification)
	self   cgo.Handle
	g      *cs.Guard
	log    logrus.FieldLogger
}

// OpenQuorum connects with quorum_initialize and, as upstream requires,
// fails with ErrNoQuorumProvider unless corosync reports QUORUM_SET. notify
// is called from Dispatch/Run, in order; it may call Close.
func OpenQuorum(notify func(Notification)) (*Quorum, error) {
	q := &Quorum{notify: notify, log: logrus.StandardLogger()}
	q.self = cgo.NewHandle(q)
	var typ C.uint32_t
	if err := cs.Check("quorum_initialize", cs.Code(C.pmx_quorum_initialize(&q.c, &typ, C.uintptr_t(q.self)))); err != nil {
		q.self.Delete()
		return nil, err
	}
	if typ != C.QUORUM_SET {
		C.quorum_finalize(q.c)
		q.self.Delete()
		return nil, fmt.Errorf("%w: got %d", ErrNoQuorumProvider, typ)
	}
	g, err := cs.NewGuard(q.finalize)
	if err != nil {
		C.quorum_finalize(q.c)
		q.self.Delete()
		return nil, err
	}
	q.g = g
	return q, nil
}

// SetLogger sets where retry messages go (default: the logrus standard logger).
func (q *Quorum) SetLogger(l logrus.FieldLogger) { q.log = l }

func (q *Quorum) finalize() {
	if err := cs.Check("quorum_finalize", cs.Code(C.quorum_finalize(q.c))); err != nil {
		q.log.Debugf("%v", err)
	}
	q.self.Delete()
}

// Close finalizes the handle once no call uses it. Safe to call twice,
// concurrently with Run and from the notify callback.
func (q *Quorum) Close() error {
	q.g.Close()
	return nil
}

func (q *Quorum) call(op string, f func() C.cs_error_t) error {
	if !q.g.Enter() {
		return cs.Closed(op)
	}
	defer q.g.Leave()
	return cs.Check(op, cs.Code(f()))
}

// TrackStart asks for a notification on every quorum change
// (CS_TRACK_CHANGES, as upstream).
func (q *Quorum) TrackStart() error {
	return q.call("quorum_trackstart", func() C.cs_error_t { return C.quorum_trackstart(q.c, C.CS_TRACK_CHANGES) })
}

// Quorate asks corosync directly (quorum_getquorate).
func (q *Quorum) Quorate() (bool, error) {
	var v C.int
	err := q.call("quorum_getquorate", func() C.cs_error_t { return C.quorum_getquorate(q.c, &v) })
	return v != 0, err
}

// Fd returns the descriptor that becomes readable when Dispatch has work.
func (q *Quorum) Fd() (int, error) {
	var fd C.int
	err := q.call("quorum_fd_get", func() C.cs_error_t { return C.quorum_fd_get(q.c, &fd) })
	return int(fd), err
}

// Dispatch delivers all pending notifications (CS_DISPATCH_ALL), retrying
// TRY_AGAIN every 100 ms until ctx is done.
func (q *Quorum) Dispatch(ctx context.Context) error {
	closed := false
	err := cs.Retry(ctx, q.log, "quorum_dispatch", 0, dispatchLogEvery, func() cs.Code {
		if !q.g.Enter() {
			closed = true
			return cs.ErrBadHandle
		}
		defer q.g.Leave()
		return cs.Code(C.quorum_dispatch(q.c, C.CS_DISPATCH_ALL))
	})
	if closed {
		return cs.Closed("quorum_dispatch")
	}
	return err
}

// Run polls and dispatches until ctx is done (ctx.Err()), Close (nil) or a
// dispatch failure such as ErrLibrary when corosync went away.
func (q *Quorum) Run(ctx context.Context) error {
	fd := func() (int, error) {
		var fd C.int
		err := cs.Check("quorum_fd_get", cs.Code(C.quorum_fd_get(q.c, &fd)))
		return int(fd), err
	}
	return cs.RunLoop(ctx, q.g, "quorum_dispatch", fd, func() error { return q.Dispatch(ctx) })
}

//export goQuorumNotify
func goQuorumNotify(ctx C.uintptr_t, quorate C.uint32_t, ringSeq C.uint64_t, n C.uint32_t, nodes *C.uint32_t) {
	if ctx == 0 {
		return
	}
	q, _ := cgo.Handle(ctx).Value().(*Quorum)
	if q == nil || q.notify == nil || q.g.Closing() {
		return
	}
	var ids []uint32
	if n > 0 && nodes != nil {
		for _, id := range unsafe.Slice(nodes, int(n)) {
			ids = append(ids, uint32(id))
		}
	}
	q.notify(Notification{Quorate: quorate != 0, RingSeq: uint64(ringSeq), Nodes: ids})
}
