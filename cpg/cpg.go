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
	"sync"
	"time"
	"unsafe"

	"github.com/pmxcfs-go/pmxcfs/internal/cs"
	"github.com/pmxcfs-go/pmxcfs/internal/fdwait"
	"github.com/sirupsen/logrus"
)

// ErrTryAgain matches (errors.Is) a send refused because the group is congested. Every
// error returned here is a *cs.Error, so the other cs codes match as well.
const ErrTryAgain = cs.ErrTryAgain

// MaxGroupName is the longest group name; the NUL that is counted in the
// wire length takes the last byte of CPG_MAX_NAME_LENGTH.
const MaxGroupName = C.CPG_MAX_NAME_LENGTH - 1

// Address is one group member: a process on a node.
type Address struct {
	NodeID uint32
	PID    uint32
	Reason Reason
}

// Reason says why a member joined or left (cpg_reason_t); a node-down or node-up means
// the totem ring changed under the group.
type Reason uint32

const (
	ReasonJoin     Reason = C.CPG_REASON_JOIN
	ReasonLeave    Reason = C.CPG_REASON_LEAVE
	ReasonNodeDown Reason = C.CPG_REASON_NODEDOWN
	ReasonNodeUp   Reason = C.CPG_REASON_NODEUP
	ReasonProcDown Reason = C.CPG_REASON_PROCDOWN
)

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

// Callbacks are called on the goroutine running Dispatch, one at a time and in corosync's
// delivery order. They may call TryMcast and Close.
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
	conn   *cs.Conn
	sendMu sync.Mutex // serialises join, leave and mcast, as upstream's cpg_mutex
}

// Initialize connects to corosync with plain cpg_initialize, as upstream
// does, or with cpg_model_initialize when cb.TotemConfChg is set. Without a running corosync this fails with CS_ERR_LIBRARY (cs.ErrLibrary).
func Initialize(cb Callbacks) (*Handle, error) {
	h := &Handle{cb: cb}
	conn, err := cs.Open(cs.Lib{
		Name: "cpg",
		FdGet: func() (int, cs.Code) {
			var fd C.int
			code := C.cpg_fd_get(h.c, &fd)
			return int(fd), cs.Code(code)
		},
		Dispatch:       func() cs.Code { return cs.Code(C.cpg_dispatch(h.c, C.CS_DISPATCH_ALL)) },
		Finalize:       func() cs.Code { return cs.Code(C.cpg_finalize(h.c)) },
		DispatchPolicy: cs.CPG,
	}, h, func(key uintptr) error {
		totem := C.int(0)
		if cb.TotemConfChg != nil {
			totem = 1
		}
		return cs.Check("cpg_initialize", cs.Code(C.pmx_cpg_initialize(&h.c, C.uintptr_t(key), totem)))
	})
	if err != nil {
		return nil, err
	}
	h.conn = conn
	return h, nil
}

// SetLogger sets where retry messages go (default: the logrus standard logger).
func (h *Handle) SetLogger(l logrus.FieldLogger) { h.conn.SetLogger(l) }

// Close finalizes the handle once no call is using it any more. It is safe
// to call more than once, concurrently with Dispatch, and from a callback; later
// calls on the handle fail with CS_ERR_BAD_HANDLE.
func (h *Handle) Close() error {
	h.conn.Close()
	return nil
}

// LocalNodeID returns this node's corosync nodeid (cpg_local_get).
func (h *Handle) LocalNodeID() (uint32, error) {
	var id C.uint
	err := h.conn.Call("cpg_local_get", func() cs.Code { return cs.Code(C.cpg_local_get(h.c, &id)) })
	return uint32(id), err
}

// Wait blocks until Dispatch has work or the connection hangs up, and returns the
// descriptor's events; zero when woken (Wake, Close) or at deadline (zero: none).
func (h *Handle) Wait(deadline time.Time) (fdwait.Events, error) { return h.conn.Wait(deadline) }

// Wake makes a Wait in progress, or the next one, return zero events.
func (h *Handle) Wake() { h.conn.Wake() }

// Run polls and dispatches until ctx ends or the connection fails, for a client that
// needs no loop of its own (the daemon runs its own, cluster.Group.Run; fsbench's CPG
// floor uses this one).
func (h *Handle) Run(ctx context.Context) error { return h.conn.Run(ctx) }

// Dispatch delivers every pending callback (CS_DISPATCH_ALL) without
// blocking, retrying TRY_AGAIN until ctx is done.
func (h *Handle) Dispatch(ctx context.Context) error { return h.conn.Dispatch(ctx) }

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
	return h.conn.Retry(ctx, op, cs.CPG, func() cs.Code {
		return cs.Code(C.pmx_cpg_group(h.c, name, C.size_t(len(group)+1), join))
	})
}

// TryMcast sends msg to the joined group with CPG_TYPE_AGREED in a single attempt. The
// caller runs the retry loop (upstream's is cs.Send), so ErrTryAgain means "congested, try
// later".
func (h *Handle) TryMcast(msg []byte) error {
	buf := C.CBytes(msg)
	defer C.free(buf)
	h.sendMu.Lock()
	defer h.sendMu.Unlock()
	return h.conn.Call("cpg_mcast_joined", func() cs.Code {
		return cs.Code(C.pmx_cpg_mcast(h.c, buf, C.size_t(len(msg))))
	})
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
	h, ok := cs.Lookup[*Handle](uintptr(ctx))
	if !ok || h.cb.Deliver == nil {
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
	h, ok := cs.Lookup[*Handle](uintptr(ctx))
	if !ok || h.cb.ConfChg == nil {
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
	h, ok := cs.Lookup[*Handle](uintptr(ctx))
	if !ok || h.cb.TotemConfChg == nil {
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
