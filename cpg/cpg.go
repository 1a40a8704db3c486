// Package cpg binds corosync's closed process group library (libcpg) the way
// pmxcfs uses it: join a named group, multicast with agreed (total) order, and
// receive messages and membership changes in order through callbacks.
package cpg

/*
#cgo LDFLAGS: -lcpg
#include <stdint.h>
#include <stdlib.h>
#include <corosync/cpg.h>

cs_error_t pmx_cpg_initialize(cpg_handle_t *handle, uintptr_t ctx, int totem);
cs_error_t pmx_cpg_group(cpg_handle_t handle, const char *name, size_t len, int join);
cs_error_t pmx_cpg_mcast(cpg_handle_t handle, void *buf, size_t len);
*/
import "C"

import (
	"context"
	"runtime/cgo"
	"sync"
	"unsafe"

	"github.com/pmxcfs-go/pmxcfs/internal/cs"
	"github.com/sirupsen/logrus"
)

// Error and Code are the shared corosync error types; errors.Is(err,
// ErrTryAgain) and friends work on every error returned here.
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
	ErrNameTooLong  = cs.ErrNameTooLong
	ErrExist        = cs.ErrExist
	ErrNotExist     = cs.ErrNotExist
	ErrTooBig       = cs.ErrTooBig
	ErrAccess       = cs.ErrAccess
)

// MaxGroupName is the longest group name; the NUL that is counted in the
// wire length takes the last byte of CPG_MAX_NAME_LENGTH.
const MaxGroupName = C.CPG_MAX_NAME_LENGTH - 1

// Upstream's send policy (dfsm.c): up to 100 retries 100 ms apart on
// TRY_AGAIN, with a log line every 10 retries.
const (
	mcastRetries = 100
	logEvery     = 10
)

// Reason says why a member joined or left (cpg_reason_t).
type Reason uint32

const (
	ReasonJoin     Reason = C.CPG_REASON_JOIN
	ReasonLeave    Reason = C.CPG_REASON_LEAVE
	ReasonNodeDown Reason = C.CPG_REASON_NODEDOWN
	ReasonNodeUp   Reason = C.CPG_REASON_NODEUP
	ReasonProcDown Reason = C.CPG_REASON_PROCDOWN
)

// Address is one group member: a process on a node.
type Address struct {
	NodeID uint32
	PID    uint32
	Reason Reason
}

// Message is one delivered multicast. Data is a Go copy.
type Message struct {
	Group  string
	NodeID uint32
	PID    uint32
	Data   []byte
}

// ConfChg is a membership change of a group.
type ConfChg struct {
	Group   string
	Members []Address
	Left    []Address
	Joined  []Address
}

// TotemConfChg is a membership change of the totem ring under the groups. corosync sends
// it after the groups' ConfChg of the same change, and once on joining (the current ring).
type TotemConfChg struct {
	RingNodeID uint32
	RingSeq    uint64 // the ring id quorum notifications carry too
	Members    []uint32
}

// Callbacks are called on the goroutine running Dispatch or Run, one at a
// time and in corosync's delivery order. They may call Mcast and Close.
type Callbacks struct {
	Deliver func(Message)
	ConfChg func(ConfChg)
	// TotemConfChg, if set, makes Initialize use cpg_model_initialize (CPG_MODEL_V1, with the
	// initial totem membership) instead of plain cpg_initialize; only local IPC differs.
	TotemConfChg func(TotemConfChg)
}

// Handle is one connection to the cpg service.
type Handle struct {
	c      C.cpg_handle_t
	cb     Callbacks
	self   cgo.Handle
	g      *cs.Guard
	sendMu sync.Mutex // serialises join, leave and mcast, as upstream's cpg_mutex
	log    logrus.FieldLogger
}

// Initialize connects to corosync with plain cpg_initialize, as upstream
// does, or with cpg_model_initialize when cb.TotemConfChg is set. Without a
// running corosync this fails with ErrLibrary.
func Initialize(cb Callbacks) (*Handle, error) {
	h := &Handle{cb: cb, log: logrus.StandardLogger()}
	h.self = cgo.NewHandle(h)
	totem := C.int(0)
	if cb.TotemConfChg != nil {
		totem = 1
	}
	if err := cs.Check("cpg_initialize", cs.Code(C.pmx_cpg_initialize(&h.c, C.uintptr_t(h.self), totem))); err != nil {
		h.self.Delete()
		return nil, err
	}
	g, err := cs.NewGuard(h.finalize)
	if err != nil {
		C.cpg_finalize(h.c)
		h.self.Delete()
		return nil, err
	}
	h.g = g
	return h, nil
}

// SetLogger sets where retry messages go (default: the logrus standard logger).
func (h *Handle) SetLogger(l logrus.FieldLogger) { h.log = l }

func (h *Handle) finalize() {
	if err := cs.Check("cpg_finalize", cs.Code(C.cpg_finalize(h.c))); err != nil {
		h.log.Debugf("%v", err)
	}
	h.self.Delete()
}

// Close finalizes the handle once no call is using it any more. It is safe
// to call more than once, concurrently with Run, and from a callback; later
// calls on the handle fail with ErrBadHandle.
func (h *Handle) Close() error {
	h.g.Close()
	return nil
}

// call runs one C call under the guard.
func (h *Handle) call(op string, f func() C.cs_error_t) error {
	if !h.g.Enter() {
		return cs.Closed(op)
	}
	defer h.g.Leave()
	return cs.Check(op, cs.Code(f()))
}

// retry runs a C call with the TRY_AGAIN policy; retries <= 0 retries until
// ctx is done.
func (h *Handle) retry(ctx context.Context, op string, retries int, f func() C.cs_error_t) error {
	closed := false
	err := cs.Retry(ctx, h.log, op, retries, logEvery, func() cs.Code {
		if !h.g.Enter() {
			closed = true
			return cs.ErrBadHandle
		}
		defer h.g.Leave()
		return cs.Code(f())
	})
	if closed {
		return cs.Closed(op)
	}
	return err
}

// LocalNodeID returns this node's corosync nodeid (cpg_local_get).
func (h *Handle) LocalNodeID() (uint32, error) {
	var id C.uint
	err := h.call("cpg_local_get", func() C.cs_error_t { return C.cpg_local_get(h.c, &id) })
	return uint32(id), err
}

// Fd returns the descriptor that becomes readable when Dispatch has work.
func (h *Handle) Fd() (int, error) {
	var fd C.int
	err := h.call("cpg_fd_get", func() C.cs_error_t { return C.cpg_fd_get(h.c, &fd) })
	return int(fd), err
}

// Join joins group, retrying TRY_AGAIN until ctx is done. The name is sent
// with its terminating NUL counted in the length, as upstream does, so
// "pve_dcdb_v1" is the 12-byte group upstream nodes use.
func (h *Handle) Join(ctx context.Context, group string) error {
	return h.group(ctx, "cpg_join", group, 1)
}

// Leave leaves group, retrying TRY_AGAIN until ctx is done.
func (h *Handle) Leave(ctx context.Context, group string) error {
	return h.group(ctx, "cpg_leave", group, 0)
}

func (h *Handle) group(ctx context.Context, op, group string, join C.int) error {
	if len(group) > MaxGroupName {
		return &cs.Error{Op: op, Code: cs.ErrNameTooLong, Detail: "group name longer than 127 bytes"}
	}
	name := C.CString(group)
	defer C.free(unsafe.Pointer(name))
	h.sendMu.Lock()
	defer h.sendMu.Unlock()
	return h.retry(ctx, op, 0, func() C.cs_error_t {
		return C.pmx_cpg_group(h.c, name, C.size_t(len(group)+1), join)
	})
}

// Mcast sends the concatenation of parts to the joined group with
// CPG_TYPE_AGREED. On TRY_AGAIN it retries every 100 ms, up to 100 times
// or until ctx is done, and then returns the ErrTryAgain error.
func (h *Handle) Mcast(ctx context.Context, parts ...[]byte) error {
	return h.mcast(ctx, mcastRetries, parts)
}

// TryMcast is Mcast with a single attempt, for callers that run their own
// retry loop (ErrTryAgain means "congested, try later").
func (h *Handle) TryMcast(parts ...[]byte) error {
	return h.mcast(context.Background(), -1, parts)
}

func (h *Handle) mcast(ctx context.Context, retries int, parts [][]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	buf := C.malloc(C.size_t(max(n, 1)))
	defer C.free(buf)
	dst := unsafe.Slice((*byte)(buf), max(n, 1))
	off := 0
	for _, p := range parts {
		off += copy(dst[off:], p)
	}
	h.sendMu.Lock()
	defer h.sendMu.Unlock()
	if retries < 0 {
		return h.call("cpg_mcast_joined", func() C.cs_error_t { return C.pmx_cpg_mcast(h.c, buf, C.size_t(n)) })
	}
	return h.retry(ctx, "cpg_mcast_joined", retries, func() C.cs_error_t {
		return C.pmx_cpg_mcast(h.c, buf, C.size_t(n))
	})
}

// Dispatch delivers every pending callback (CS_DISPATCH_ALL) without
// blocking, retrying TRY_AGAIN until ctx is done.
func (h *Handle) Dispatch(ctx context.Context) error {
	return h.retry(ctx, "cpg_dispatch", 0, func() C.cs_error_t {
		return C.cpg_dispatch(h.c, C.CS_DISPATCH_ALL)
	})
}

// Run polls the handle's fd and dispatches until ctx is done (ctx.Err()),
// the handle is closed (nil) or dispatching fails, e.g. ErrLibrary when
// corosync went away. Only one Run per handle.
func (h *Handle) Run(ctx context.Context) error {
	return cs.RunLoop(ctx, h.g, "cpg_dispatch", h.fdUnguarded, func() error { return h.Dispatch(ctx) })
}

// fdUnguarded is Fd for RunLoop, which already holds the guard.
func (h *Handle) fdUnguarded() (int, error) {
	var fd C.int
	err := cs.Check("cpg_fd_get", cs.Code(C.cpg_fd_get(h.c, &fd)))
	return int(fd), err
}

func handleFrom(ctx C.uintptr_t) *Handle {
	if ctx == 0 {
		return nil
	}
	h, _ := cgo.Handle(ctx).Value().(*Handle)
	if h == nil || h.g.Closing() {
		return nil
	}
	return h
}

func groupName(value *C.char, length C.uint32_t) string {
	n := min(int(length), C.CPG_MAX_NAME_LENGTH)
	b := C.GoBytes(unsafe.Pointer(value), C.int(n))
	if n > 0 && b[n-1] == 0 {
		b = b[:n-1]
	}
	return string(b)
}

func addresses(p *C.struct_cpg_address, n C.size_t) []Address {
	if n == 0 || p == nil {
		return nil
	}
	out := make([]Address, 0, int(n))
	for _, a := range unsafe.Slice(p, int(n)) {
		out = append(out, Address{NodeID: uint32(a.nodeid), PID: uint32(a.pid), Reason: Reason(a.reason)})
	}
	return out
}

//export goCpgDeliver
func goCpgDeliver(ctx C.uintptr_t, group *C.char, glen C.uint32_t, nodeid, pid C.uint32_t, msg unsafe.Pointer, n C.size_t) {
	h := handleFrom(ctx)
	if h == nil || h.cb.Deliver == nil {
		return
	}
	data := C.GoBytes(msg, C.int(n))
	h.cb.Deliver(Message{Group: groupName(group, glen), NodeID: uint32(nodeid), PID: uint32(pid), Data: data})
}

//export goCpgConfchg
func goCpgConfchg(ctx C.uintptr_t, group *C.char, glen C.uint32_t,
	members *C.struct_cpg_address, nmembers C.size_t,
	left *C.struct_cpg_address, nleft C.size_t,
	joined *C.struct_cpg_address, njoined C.size_t) {
	h := handleFrom(ctx)
	if h == nil || h.cb.ConfChg == nil {
		return
	}
	h.cb.ConfChg(ConfChg{
		Group:   groupName(group, glen),
		Members: addresses(members, nmembers),
		Left:    addresses(left, nleft),
		Joined:  addresses(joined, njoined),
	})
}

//export goCpgTotemConfchg
func goCpgTotemConfchg(ctx C.uintptr_t, ringNode C.uint32_t, ringSeq C.uint64_t, members *C.uint32_t, n C.uint32_t) {
	h := handleFrom(ctx)
	if h == nil || h.cb.TotemConfChg == nil {
		return
	}
	var ids []uint32
	if n > 0 && members != nil {
		for _, id := range unsafe.Slice(members, int(n)) {
			ids = append(ids, uint32(id))
		}
	}
	h.cb.TotemConfChg(TotemConfChg{RingNodeID: uint32(ringNode), RingSeq: uint64(ringSeq), Members: ids})
}
