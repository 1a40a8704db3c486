// Package clusterlog is the replicated cluster log of pmxcfs: the binary entry format sent
// over the KVSTORE group, the ring buffer whose bytes are the KVSTORE state, the merge run
// at every KVSTORE sync, and the JSON dump served as .clusterlog and over IPC.
//
// Every layout here is upstream's (logger.c), little endian, so that a Go node and a C
// node exchange and merge the same bytes.
package clusterlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Sizes of upstream's clog_entry_t and ring.
const (
	// EntryDataOffset is where the strings start inside an entry.
	EntryDataOffset = 44
	// entryStructSize is sizeof(clog_entry_t) on the C side (44 rounded up to 8). Upstream
	// counts it, not EntryDataOffset, in an entry's size, so every entry ends in 4 bytes
	// that hold no string; we send zeros there.
	entryStructSize = 48
	// MaxEntrySize bounds one entry (CLOG_MAX_ENTRY_SIZE).
	MaxEntrySize = 4096
	// DefaultRingSize is the ring size every upstream node uses (CLOG_DEFAULT_SIZE).
	DefaultRingSize = 8192 * 16
	ringHeaderSize  = 8
)

// ErrBadEntry is wrapped by every entry decoding error.
var ErrBadEntry = errors.New("bad cluster log entry")

// Entry is one cluster-log record. The string fields hold the bytes of each field without
// the terminating NUL (they may contain an earlier NUL if a peer sent one; printing stops
// there, as upstream's %s does).
type Entry struct {
	UID         uint32
	Time        uint32
	NodeDigest  uint64
	IdentDigest uint64
	PID         uint32
	Priority    uint8
	Node        string
	Ident       string
	Tag         string
	Msg         string
}

// Digest is upstream's FNV-1a-64 (offset basis 0xcbf29ce484222325, standard 64-bit prime)
// over b. Callers hash a name together with its terminating NUL.
func Digest(b []byte) uint64 {
	h := uint64(0xcbf29ce484222325)
	for _, c := range b {
		h ^= uint64(c)
		h *= 0x100000001b3
	}
	return h
}

// DigestString hashes s plus its NUL, the way node and ident digests are made.
func DigestString(s string) uint64 {
	return Digest(append([]byte(s), 0))
}

// Size is the entry's length on the wire and in the ring: 48 + the string lengths with NULs.
func (e *Entry) Size() int {
	return entryStructSize + len(e.Node) + len(e.Ident) + len(e.Tag) + len(e.Msg) + 4
}

// Marshal encodes the entry as upstream sends it in a KVSTORE LOG message, with prev and
// next 0 and the 4 trailing bytes (uninitialised upstream) zero.
func (e *Entry) Marshal() ([]byte, error) {
	if err := e.checkLengths(); err != nil {
		return nil, err
	}
	b := make([]byte, e.Size())
	e.put(b)
	return b, nil
}

func (e *Entry) checkLengths() error {
	for _, f := range []string{e.Node, e.Ident, e.Tag} {
		if len(f)+1 > 255 {
			return fmt.Errorf("%w: string field of %d bytes exceeds 254", ErrBadEntry, len(f))
		}
	}
	if e.Size() > MaxEntrySize {
		return fmt.Errorf("%w: entry of %d bytes exceeds %d", ErrBadEntry, e.Size(), MaxEntrySize)
	}
	return nil
}

// put writes the entry into b, which must be e.Size() long and zeroed.
func (e *Entry) put(b []byte) {
	le := binary.LittleEndian
	le.PutUint32(b[8:], e.UID)
	le.PutUint32(b[12:], e.Time)
	le.PutUint64(b[16:], e.NodeDigest)
	le.PutUint64(b[24:], e.IdentDigest)
	le.PutUint32(b[32:], e.PID)
	b[36] = e.Priority
	b[37] = uint8(len(e.Node) + 1)
	b[38] = uint8(len(e.Ident) + 1)
	b[39] = uint8(len(e.Tag) + 1)
	le.PutUint32(b[40:], uint32(len(e.Msg)+1))
	p := EntryDataOffset
	for _, f := range []string{e.Node, e.Ident, e.Tag, e.Msg} {
		p += copy(b[p:], f) + 1
	}
}

// Unmarshal decodes a KVSTORE LOG payload. Like upstream it demands the exact length
// 48 + string lengths and a NUL at the end of every string; unlike upstream it also
// refuses empty (zero-length) string fields. The prev/next words and the 4 trailing
// bytes are ignored.
func Unmarshal(b []byte) (Entry, error) {
	if len(b) < entryStructSize {
		return Entry{}, fmt.Errorf("%w: short message (%d < %d)", ErrBadEntry, len(b), entryStructSize)
	}
	h := readHeader(b)
	if size := h.size(); uint64(len(b)) != size {
		return Entry{}, fmt.Errorf("%w: wrong size (%d != %d)", ErrBadEntry, len(b), size)
	}
	e, ok := h.strings(b, true)
	if !ok {
		return Entry{}, fmt.Errorf("%w: empty or unterminated string", ErrBadEntry)
	}
	return e, nil
}

// header is the fixed part of an entry as found in a buffer.
type header struct {
	prev, next                uint32
	uid, time                 uint32
	nodeDigest, identDigest   uint64
	pid                       uint32
	priority                  uint8
	nodeLen, identLen, tagLen uint8
	msgLen                    uint32
}

// readHeader decodes the 44 header bytes of b (len(b) >= 44).
func readHeader(b []byte) header {
	le := binary.LittleEndian
	return header{
		prev: le.Uint32(b[0:]), next: le.Uint32(b[4:]),
		uid: le.Uint32(b[8:]), time: le.Uint32(b[12:]),
		nodeDigest: le.Uint64(b[16:]), identDigest: le.Uint64(b[24:]),
		pid: le.Uint32(b[32:]), priority: b[36],
		nodeLen: b[37], identLen: b[38], tagLen: b[39],
		msgLen: le.Uint32(b[40:]),
	}
}

// size is clog_entry_size, computed without overflow.
func (h header) size() uint64 {
	return entryStructSize + uint64(h.nodeLen) + uint64(h.identLen) + uint64(h.tagLen) + uint64(h.msgLen)
}

// strings extracts the four fields from b (which holds at least h.size() bytes). With
// strict, every field must be non-empty and end in NUL; otherwise a field without NUL is
// taken whole, as upstream's printing would run on to the next NUL in the same entry.
func (h header) strings(b []byte, strict bool) (Entry, bool) {
	e := Entry{
		UID: h.uid, Time: h.time, NodeDigest: h.nodeDigest, IdentDigest: h.identDigest,
		PID: h.pid, Priority: h.priority,
	}
	p := uint64(EntryDataOffset)
	fields := []*string{&e.Node, &e.Ident, &e.Tag, &e.Msg}
	for i, n := range []uint64{uint64(h.nodeLen), uint64(h.identLen), uint64(h.tagLen), uint64(h.msgLen)} {
		if n == 0 || b[p+n-1] != 0 {
			if strict {
				return Entry{}, false
			}
			*fields[i] = string(b[p : p+n])
		} else {
			*fields[i] = string(b[p : p+n-1])
		}
		p += n
	}
	return e, true
}

// Pack builds an entry the way upstream's clog_pack does: node, ident and tag are cut to
// 254 bytes, digests cover the (cut) name plus NUL, and msg goes through upstream's
// utf8_to_ascii with quote escaping. Where upstream would produce an entry over 4096
// bytes with an unterminated message, Pack drops whole trailing escape units instead so
// the entry stays valid. priority must be 0..7.
func Pack(uid uint32, node, ident, tag string, pid, time uint32, priority uint8, msg string) (Entry, error) {
	if priority >= 8 {
		return Entry{}, fmt.Errorf("%w: priority %d out of range", ErrBadEntry, priority)
	}
	cnode, nodeDigest := packName(node)
	cident, identDigest := packName(ident)
	ctag, _ := packName(tag)
	lens := len(cnode) + len(cident) + len(ctag) + 3
	// upstream's escape buffer: what is left of 4096 after the header and names
	units := escapeUnits(cstring(msg), MaxEntrySize-EntryDataOffset-lens)
	// largest message (without NUL) that keeps the entry within 4096 bytes
	maxMsg := MaxEntrySize - entryStructSize - lens - 1
	total := 0
	for _, u := range units {
		total += len(u)
	}
	for total > maxMsg {
		total -= len(units[len(units)-1])
		units = units[:len(units)-1]
	}
	buf := make([]byte, 0, total)
	for _, u := range units {
		buf = append(buf, u...)
	}
	return Entry{
		UID: uid, Time: time, NodeDigest: nodeDigest, IdentDigest: identDigest,
		PID: pid, Priority: priority,
		Node: cnode, Ident: cident, Tag: ctag, Msg: string(buf),
	}, nil
}

// packName returns the stored name (C string cut to 254 bytes) and its digest, taken like
// upstream over min(strlen+1, 255) bytes of the original.
func packName(s string) (string, uint64) {
	s = cstring(s)
	withNul := append([]byte(s), 0)
	if len(withNul) > 255 {
		return s[:254], Digest(withNul[:255])
	}
	return s, Digest(withNul)
}

// cstring cuts s at its first NUL, as C string functions see it.
func cstring(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return s[:i]
		}
	}
	return s
}

// escapeUnits escapes msg into output units (one per input character) like upstream's
// cfs-utils.c:utf8_to_ascii with quote escaping: '"' becomes \", control characters and DEL
// become #NNN, other BMP characters \uXXXX (lowercase hex), characters above U+FFFF are
// dropped; input that is not valid UTF-8 is treated byte-wise with non-ASCII bytes (and DEL)
// becoming '?'. Backslash is kept as is. With bufsize >= 0 it stops like upstream once the
// output reaches bufsize-7 bytes; -1 means no limit.
func escapeUnits(msg string, bufsize int) [][]byte {
	var units [][]byte
	n := 0
	full := func() bool { return bufsize >= 0 && n >= bufsize-7 }
	add := func(u []byte) {
		units = append(units, u)
		n += len(u)
	}
	if bufsize >= 0 && bufsize <= 10 {
		return nil
	}
	if !utf8.ValidString(msg) {
		for i := 0; i < len(msg) && !full(); i++ {
			c := msg[i]
			switch {
			case c == '"':
				add([]byte(`\"`))
			case c < 32:
				add([]byte(fmt.Sprintf("#%03d", c)))
			case c < 127:
				add([]byte{c})
			default:
				add([]byte{'?'})
			}
		}
		return units
	}
	for _, r := range msg {
		if full() {
			break
		}
		switch {
		case r == '"':
			add([]byte(`\"`))
		case r < 32 || r == 127:
			add([]byte(fmt.Sprintf("#%03d", r)))
		case r < 127:
			add([]byte{byte(r)})
		case r < 0x10000:
			add([]byte(fmt.Sprintf(`\u%04x`, r)))
		default:
			// upstream drops characters outside the BMP
		}
	}
	return units
}
