package dcdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pmxcfs-go/pmxcfs/memdb"
)

// NORMAL message subtypes of the DCDB group (dcdb.h:dcdb_message_t,
// docs/protocol.md#dcdb-messages).
const (
	MsgWrite         uint16 = 1
	MsgMkdir         uint16 = 2
	MsgDelete        uint16 = 3
	MsgRename        uint16 = 4
	MsgCreate        uint16 = 5
	MsgMtime         uint16 = 6
	MsgUnlockRequest uint16 = 7
	MsgUnlock        uint16 = 8
)

var le = binary.LittleEndian

// Decoding errors; each one makes the receiver leave the group.
var (
	ErrShortFuse     = errors.New("dcdb: short fuse message")
	ErrBadFuse       = errors.New("dcdb: malformed fuse message")
	ErrShortUnlock   = errors.New("dcdb: short unlock message")
	ErrBadUnlock     = errors.New("dcdb: malformed unlock message - path not terminated")
	ErrShortRecord   = errors.New("dcdb: short inode update")
	ErrBadRecordType = errors.New("dcdb: inode update with unknown type")
	ErrBadRecord     = errors.New("dcdb: malformed inode update")
)

// FuseMessage is the payload of WRITE, MKDIR, DELETE, RENAME, CREATE and MTIME
// (docs/protocol.md#fuse-message). HasPath/HasTo distinguish an absent string
// (length 0 on the wire) from an empty one. Offset is the write offset, the
// truncate length, or the mtime; Flags bit 1 means truncate.
type FuseMessage struct {
	Path, To       string
	HasPath, HasTo bool
	Offset, Flags  uint32
	Data           []byte
}

// cString is what a C reader sees of a NUL-terminated field: up to the first NUL.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// Encode builds the wire payload.
func (m *FuseMessage) Encode() []byte {
	var pathLen, toLen uint32
	if m.HasPath {
		pathLen = uint32(len(m.Path) + 1)
	}
	if m.HasTo {
		toLen = uint32(len(m.To) + 1)
	}
	b := make([]byte, 20, 20+int(pathLen)+int(toLen)+len(m.Data))
	le.PutUint32(b[0:], uint32(len(m.Data)))
	le.PutUint32(b[4:], m.Offset)
	le.PutUint32(b[8:], pathLen)
	le.PutUint32(b[12:], toLen)
	le.PutUint32(b[16:], m.Flags)
	if m.HasPath {
		b = append(append(b, m.Path...), 0)
	}
	if m.HasTo {
		b = append(append(b, m.To...), 0)
	}
	return append(b, m.Data...)
}

// DecodeFuse parses a fuse payload with upstream's checks. Data aliases b.
func DecodeFuse(b []byte) (FuseMessage, error) {
	if len(b) < 20 {
		return FuseMessage{}, fmt.Errorf("%w (%d < 20)", ErrShortFuse, len(b))
	}
	size, pathLen, toLen := uint64(le.Uint32(b[0:])), uint64(le.Uint32(b[8:])), uint64(le.Uint32(b[12:]))
	m := FuseMessage{Offset: le.Uint32(b[4:]), Flags: le.Uint32(b[16:])}
	rest := b[20:]
	if uint64(len(rest)) != size+pathLen+toLen {
		return FuseMessage{}, fmt.Errorf("%w: length %d, fields %d+%d+%d", ErrBadFuse, len(rest), size, pathLen, toLen)
	}
	if pathLen > 0 {
		if rest[pathLen-1] != 0 {
			return FuseMessage{}, fmt.Errorf("%w: path not terminated", ErrBadFuse)
		}
		m.Path, m.HasPath = cString(rest[:pathLen]), true
	}
	rest = rest[pathLen:]
	if toLen > 0 {
		if rest[toLen-1] != 0 {
			return FuseMessage{}, fmt.Errorf("%w: 'to' not terminated", ErrBadFuse)
		}
		m.To, m.HasTo = cString(rest[:toLen]), true
	}
	if size > 0 {
		m.Data = rest[toLen:]
	}
	return m, nil
}

// UnlockMessage is the payload of UNLOCK_REQUEST and UNLOCK (docs/protocol.md#unlock-messages).
type UnlockMessage struct {
	Csum [32]byte
	Path string
}

// Encode builds the wire payload.
func (m *UnlockMessage) Encode() []byte {
	b := make([]byte, 0, 33+len(m.Path))
	b = append(b, m.Csum[:]...)
	return append(append(b, m.Path...), 0)
}

// DecodeUnlock parses an unlock payload with upstream's checks.
func DecodeUnlock(b []byte) (UnlockMessage, error) {
	if len(b) < 33 {
		return UnlockMessage{}, fmt.Errorf("%w (%d < 33)", ErrShortUnlock, len(b))
	}
	if b[len(b)-1] != 0 {
		return UnlockMessage{}, ErrBadUnlock
	}
	var m UnlockMessage
	copy(m.Csum[:], b)
	m.Path = cString(b[32:])
	return m, nil
}

// EncodeRecord builds an UPDATE payload (docs/protocol.md#update-record). Data is sent only for
// regular files.
func EncodeRecord(r *memdb.SyncRecord) []byte {
	var data []byte
	if r.Type == memdb.TypeReg {
		data = r.Data
	}
	b := make([]byte, 41, 41+len(r.Name)+1+len(data))
	le.PutUint64(b[0:], r.Parent)
	le.PutUint64(b[8:], r.Inode)
	le.PutUint64(b[16:], r.Version)
	le.PutUint32(b[24:], r.Writer)
	le.PutUint32(b[28:], r.Mtime)
	le.PutUint32(b[32:], uint32(len(data)))
	le.PutUint32(b[36:], uint32(len(r.Name)+1))
	b[40] = r.Type
	b = append(append(b, r.Name...), 0)
	return append(b, data...)
}

// DecodeRecord parses an UPDATE payload with upstream's checks. The data is
// copied. A directory record may carry a size (upstream ignores its bytes);
// we drop them too.
func DecodeRecord(b []byte) (memdb.SyncRecord, error) {
	if len(b) < 40 {
		return memdb.SyncRecord{}, fmt.Errorf("%w (%d < 40)", ErrShortRecord, len(b))
	}
	// Upstream reads the type byte at offset 40 even for a 40-byte message; the
	// length check below then fails anyway, so require it up front.
	if len(b) < 41 {
		return memdb.SyncRecord{}, fmt.Errorf("%w (no type byte)", ErrShortRecord)
	}
	r := memdb.SyncRecord{Parent: le.Uint64(b[0:]), Inode: le.Uint64(b[8:]), Version: le.Uint64(b[16:]),
		Writer: le.Uint32(b[24:]), Mtime: le.Uint32(b[28:]), Type: b[40]}
	size, nameLen := uint64(le.Uint32(b[32:])), uint64(le.Uint32(b[36:]))
	if r.Type != memdb.TypeReg && r.Type != memdb.TypeDir {
		return memdb.SyncRecord{}, fmt.Errorf("%w %d", ErrBadRecordType, r.Type)
	}
	rest := b[41:]
	if uint64(len(rest)) != size+nameLen {
		return memdb.SyncRecord{}, fmt.Errorf("%w: length %d != size %d + namelen %d", ErrBadRecord, len(rest), size, nameLen)
	}
	if nameLen == 0 || rest[nameLen-1] != 0 {
		return memdb.SyncRecord{}, fmt.Errorf("%w: name not terminated", ErrBadRecord)
	}
	r.Name = cString(rest[:nameLen])
	if r.Type == memdb.TypeReg && size > 0 {
		r.Data = append([]byte(nil), rest[nameLen:]...)
	}
	return r, nil
}
