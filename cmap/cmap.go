// Package cmap binds corosync's configuration map (libcmap): typed reads,
// prefix iteration and change tracking, plus ReadCluster, which reads the
// cluster name, config version and node list the way pmxcfs does.
package cmap

/*
#cgo LDFLAGS: -lcmap
#include <stdint.h>
#include <stdlib.h>
#include <corosync/cmap.h>

cs_error_t pmx_cmap_track_add(cmap_handle_t handle, const char *key, int32_t flags,
			      uintptr_t ctx, cmap_track_handle_t *track);
*/
import "C"

import (
	"context"
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/pmxcfs-go/pmxcfs/internal/cs"
	"github.com/sirupsen/logrus"
)

// Type is a cmap value type (cmap_value_types_t).
type Type int32

const (
	TypeInt8   Type = C.CMAP_VALUETYPE_INT8
	TypeUint8  Type = C.CMAP_VALUETYPE_UINT8
	TypeInt16  Type = C.CMAP_VALUETYPE_INT16
	TypeUint16 Type = C.CMAP_VALUETYPE_UINT16
	TypeInt32  Type = C.CMAP_VALUETYPE_INT32
	TypeUint32 Type = C.CMAP_VALUETYPE_UINT32
	TypeInt64  Type = C.CMAP_VALUETYPE_INT64
	TypeUint64 Type = C.CMAP_VALUETYPE_UINT64
	TypeFloat  Type = C.CMAP_VALUETYPE_FLOAT
	TypeDouble Type = C.CMAP_VALUETYPE_DOUBLE
	TypeString Type = C.CMAP_VALUETYPE_STRING
	TypeBinary Type = C.CMAP_VALUETYPE_BINARY
)

var typeNames = map[Type]string{
	TypeInt8: "i8", TypeUint8: "u8", TypeInt16: "i16", TypeUint16: "u16", TypeInt32: "i32",
	TypeUint32: "u32", TypeInt64: "i64", TypeUint64: "u64", TypeFloat: "flt", TypeDouble: "dbl",
	TypeString: "str", TypeBinary: "bin",
}

// String uses corosync-cmapctl's short names (u32, str, ...).
func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", int32(t))
}

// Value is a raw cmap value in host byte order; strings include their NUL.
type Value struct {
	Type Type
	Data []byte
}

// Uint32 returns a u32 value.
func (v Value) Uint32() (uint32, bool) {
	if v.Type != TypeUint32 || len(v.Data) != 4 {
		return 0, false
	}
	return binary.NativeEndian.Uint32(v.Data), true
}

// Uint64 returns a u64 value.
func (v Value) Uint64() (uint64, bool) {
	if v.Type != TypeUint64 || len(v.Data) != 8 {
		return 0, false
	}
	return binary.NativeEndian.Uint64(v.Data), true
}

// String returns a string value without its NUL.
func (v Value) String() (string, bool) {
	if v.Type != TypeString {
		return "", false
	}
	d := v.Data
	if len(d) > 0 && d[len(d)-1] == 0 {
		d = d[:len(d)-1]
	}
	return string(d), true
}

// Handle is one cmap connection.
type Handle struct {
	c    C.cmap_handle_t
	conn *cs.Conn
}

// Initialize connects with cmap_initialize; without corosync it fails with
// CS_ERR_LIBRARY.
func Initialize() (*Handle, error) {
	h := &Handle{}
	conn, err := cs.Open(cs.Lib{
		Name: "cmap",
		FdGet: func() (int, cs.Code) {
			var fd C.int
			code := C.cmap_fd_get(h.c, &fd)
			return int(fd), cs.Code(code)
		},
		Dispatch:       func() cs.Code { return cs.Code(C.cmap_dispatch(h.c, C.CS_DISPATCH_ALL)) },
		Finalize:       func() cs.Code { return cs.Code(C.cmap_finalize(h.c)) },
		DispatchPolicy: cs.Service,
	}, nil, func(uintptr) error {
		// cmap has no connection context; each track carries its own (see Track).
		return cs.Check("cmap_initialize", cs.Code(C.cmap_initialize(&h.c)))
	})
	if err != nil {
		return nil, err
	}
	h.conn = conn
	return h, nil
}

// SetLogger sets where retry and ReadCluster messages go (default: the
// logrus standard logger).
func (h *Handle) SetLogger(l logrus.FieldLogger) { h.conn.SetLogger(l) }

// Close finalizes the handle (dropping its tracks) once no call uses it.
// Safe to call twice, concurrently with Run and from a track callback.
func (h *Handle) Close() error {
	h.conn.Close()
	return nil
}

// call runs f under the connection's guard; a failure names key.
func (h *Handle) call(op, key string, f func() C.cs_error_t) error {
	return h.conn.Use(op, func() error {
		if c := cs.Code(f()); c != cs.OK {
			return &cs.Error{Op: op, Code: c, Detail: key}
		}
		return nil
	})
}

// Get returns the raw value of key.
func (h *Handle) Get(key string) (Value, error) {
	ckey := C.CString(key)
	defer C.free(unsafe.Pointer(ckey))
	var (
		n   C.size_t
		typ C.cmap_value_types_t
		buf unsafe.Pointer
	)
	defer func() { C.free(buf) }()
	err := h.call("cmap_get", key, func() C.cs_error_t {
		// The first call learns the size; a value that grows in between
		// fails with INVALID_PARAM like any other cmap_get.
		if r := C.cmap_get(h.c, ckey, nil, &n, &typ); r != C.CS_OK {
			return r
		}
		buf = C.malloc(n + 1)
		return C.cmap_get(h.c, ckey, buf, &n, &typ)
	})
	if err != nil {
		return Value{}, err
	}
	return Value{Type: Type(typ), Data: C.GoBytes(buf, C.int(n))}, nil
}

func wrongType(key string, got Type, want Type) error {
	return &cs.Error{Op: "cmap_get", Code: cs.ErrInvalidParam,
		Detail: fmt.Sprintf("%s is %s, not %s", key, got, want)}
}

// GetUint32 reads a u32 key; any other type is a CS_ERR_INVALID_PARAM error
// naming both types.
func (h *Handle) GetUint32(key string) (uint32, error) {
	v, err := h.Get(key)
	if err != nil {
		return 0, err
	}
	if x, ok := v.Uint32(); ok {
		return x, nil
	}
	return 0, wrongType(key, v.Type, TypeUint32)
}

// GetUint64 reads a u64 key; any other type is a CS_ERR_INVALID_PARAM error.
func (h *Handle) GetUint64(key string) (uint64, error) {
	v, err := h.Get(key)
	if err != nil {
		return 0, err
	}
	if x, ok := v.Uint64(); ok {
		return x, nil
	}
	return 0, wrongType(key, v.Type, TypeUint64)
}

// GetString reads a string key; any other type is a CS_ERR_INVALID_PARAM error.
func (h *Handle) GetString(key string) (string, error) {
	v, err := h.Get(key)
	if err != nil {
		return "", err
	}
	if s, ok := v.String(); ok {
		return s, nil
	}
	return "", wrongType(key, v.Type, TypeString)
}

// Key is one key found by Keys.
type Key struct {
	Name string
	Type Type
	Len  int
}

// Keys lists the keys starting with prefix, in cmap's (sorted) order.
func (h *Handle) Keys(prefix string) ([]Key, error) {
	cprefix := C.CString(prefix)
	defer C.free(unsafe.Pointer(cprefix))
	var keys []Key
	err := h.conn.Use("cmap_iter_init", func() error {
		var iter C.cmap_iter_handle_t
		if c := cs.Code(C.cmap_iter_init(h.c, cprefix, &iter)); c != cs.OK {
			return &cs.Error{Op: "cmap_iter_init", Code: c, Detail: prefix}
		}
		var name [C.CMAP_KEYNAME_MAXLEN + 1]C.char
		for {
			var n C.size_t
			var typ C.cmap_value_types_t
			c := cs.Code(C.cmap_iter_next(h.c, iter, &name[0], &n, &typ))
			if c == cs.ErrNoSections {
				break
			}
			if c != cs.OK {
				C.cmap_iter_finalize(h.c, iter)
				return &cs.Error{Op: "cmap_iter_next", Code: c, Detail: prefix}
			}
			keys = append(keys, Key{Name: C.GoString(&name[0]), Type: Type(typ), Len: int(n)})
		}
		if c := cs.Code(C.cmap_iter_finalize(h.c, iter)); c != cs.OK {
			return &cs.Error{Op: "cmap_iter_finalize", Code: c, Detail: prefix}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return keys, nil
}

// Event is what happened to a tracked key.
type Event int32

const (
	EventAdd    Event = C.CMAP_TRACK_ADD
	EventDelete Event = C.CMAP_TRACK_DELETE
	EventModify Event = C.CMAP_TRACK_MODIFY
)

// TrackFlags choose the events to track and whether the key is a prefix.
type TrackFlags int32

const (
	TrackAdd    TrackFlags = C.CMAP_TRACK_ADD
	TrackDelete TrackFlags = C.CMAP_TRACK_DELETE
	TrackModify TrackFlags = C.CMAP_TRACK_MODIFY
	TrackPrefix TrackFlags = C.CMAP_TRACK_PREFIX
	TrackAll               = TrackAdd | TrackDelete | TrackModify
)

// Change is one tracked event; Old is empty for EventAdd, New for EventDelete.
type Change struct {
	Event Event
	Key   string
	New   Value
	Old   Value
}

// TrackID is corosync's name of a track (cmap_track_handle_t).
type TrackID uint64

// Track calls fn (from Run, in order) for every change of key, or of every key under it
// with TrackPrefix, until the handle is closed.
func (h *Handle) Track(key string, flags TrackFlags, fn func(Change)) (TrackID, error) {
	ckey := C.CString(key)
	defer C.free(unsafe.Pointer(ckey))
	k := h.conn.Register(fn)
	var id C.cmap_track_handle_t
	if err := h.call("cmap_track_add", key, func() C.cs_error_t {
		return C.pmx_cmap_track_add(h.c, ckey, C.int32_t(flags), C.uintptr_t(k), &id)
	}); err != nil {
		h.conn.Unregister(k)
		return 0, err
	}
	return TrackID(id), nil
}

// Run polls and dispatches until ctx is done (ctx.Err()), Close (nil) or a
// dispatch failure such as CS_ERR_LIBRARY when corosync went away.
func (h *Handle) Run(ctx context.Context) error { return h.conn.Run(ctx) }

func goValue(typ C.int, data unsafe.Pointer, n C.size_t) Value {
	v := Value{Type: Type(typ)}
	if data != nil && n > 0 {
		v.Data = C.GoBytes(data, C.int(n))
	}
	return v
}

//export goCmapNotify
func goCmapNotify(ctx C.uintptr_t, event C.int32_t, key *C.char,
	newType C.int, newData unsafe.Pointer, newLen C.size_t,
	oldType C.int, oldData unsafe.Pointer, oldLen C.size_t) {
	fn, ok := cs.Lookup[func(Change)](uintptr(ctx))
	if !ok || fn == nil {
		return
	}
	fn(Change{
		Event: Event(event),
		Key:   C.GoString(key),
		New:   goValue(newType, newData, newLen),
		Old:   goValue(oldType, oldData, oldLen),
	})
}
