// Package votequorum binds corosync's libquorum, which pmxcfs uses to follow whether the
// node is quorate (quorum.c). Vote details and expected votes are not needed by the daemon:
// `pvecm status` and `pvecm expected` run corosync-quorumtool.
package votequorum

/*
#cgo LDFLAGS: -lquorum
#include <stdint.h>
#include <corosync/quorum.h>

cs_error_t pmx_quorum_initialize(quorum_handle_t *handle, uint32_t *type, uintptr_t ctx);
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"unsafe"

	"github.com/pmxcfs-go/pmxcfs/internal/cs"
	"github.com/sirupsen/logrus"
)

// ErrNoQuorumProvider means corosync runs without a quorum provider
// (quorum_initialize reported QUORUM_FREE), which upstream treats as an error.
var ErrNoQuorumProvider = errors.New("quorum: quorum_initialize: no quorum provider (quorum_type is not QUORUM_SET)")

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
	conn   *cs.Conn
}

// OpenQuorum connects with quorum_initialize and, as upstream requires,
// fails with ErrNoQuorumProvider unless corosync reports QUORUM_SET. notify
// is called from Run, in order; it may call Close.
func OpenQuorum(notify func(Notification)) (*Quorum, error) {
	q := &Quorum{notify: notify}
	conn, err := cs.Open(cs.Lib{
		Name: "quorum",
		FdGet: func() (int, cs.Code) {
			var fd C.int
			code := C.quorum_fd_get(q.c, &fd)
			return int(fd), cs.Code(code)
		},
		Dispatch:       func() cs.Code { return cs.Code(C.quorum_dispatch(q.c, C.CS_DISPATCH_ALL)) },
		Finalize:       func() cs.Code { return cs.Code(C.quorum_finalize(q.c)) },
		DispatchPolicy: cs.Service,
	}, q, func(key uintptr) error {
		var typ C.uint32_t
		if err := cs.Check("quorum_initialize", cs.Code(C.pmx_quorum_initialize(&q.c, &typ, C.uintptr_t(key)))); err != nil {
			return err
		}
		if typ != C.QUORUM_SET {
			C.quorum_finalize(q.c)
			return fmt.Errorf("%w: got %d", ErrNoQuorumProvider, typ)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	q.conn = conn
	return q, nil
}

// SetLogger sets where retry messages go (default: the logrus standard logger).
func (q *Quorum) SetLogger(l logrus.FieldLogger) { q.conn.SetLogger(l) }

// Close finalizes the handle once no call uses it. Safe to call twice,
// concurrently with Run and from the notify callback.
func (q *Quorum) Close() error {
	q.conn.Close()
	return nil
}

// TrackStart asks for a notification on every quorum change
// (CS_TRACK_CHANGES, as upstream).
func (q *Quorum) TrackStart() error {
	return q.conn.Call("quorum_trackstart", func() cs.Code { return cs.Code(C.quorum_trackstart(q.c, C.CS_TRACK_CHANGES)) })
}

// Run polls and dispatches until ctx is done (ctx.Err()), Close (nil) or a
// dispatch failure such as CS_ERR_LIBRARY when corosync went away.
func (q *Quorum) Run(ctx context.Context) error { return q.conn.Run(ctx) }

//export goQuorumNotify
func goQuorumNotify(ctx C.uintptr_t, quorate C.uint32_t, ringSeq C.uint64_t, n C.uint32_t, nodes *C.uint32_t) {
	q, ok := cs.Lookup[*Quorum](uintptr(ctx))
	if !ok || q.notify == nil {
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
