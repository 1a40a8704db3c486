package kvstore

import (
	"bytes"
	"errors"
	"fmt"
)

// NORMAL message subtypes of the KVSTORE group (docs/protocol.md#kvstore-messages).
const (
	MsgUpdate uint16 = 1
	// MsgUpdateComplete is defined upstream but never sent; receiving it is
	// an unknown subtype.
	MsgUpdateComplete uint16 = 2
	MsgLog            uint16 = 3
)

// KeyFieldLen is the fixed size of the key field that starts an UPDATE.
const KeyFieldLen = 256

// Decoding errors of UPDATE payloads.
var (
	ErrShortUpdate = errors.New("kvstore: update shorter than its key field")
	ErrBadUpdate   = errors.New("kvstore: update key not NUL-terminated")
)

// EncodeUpdate builds an UPDATE payload: the key, cut to 255 bytes (and at
// an embedded NUL, as a C string copy would), NUL-padded to 256 bytes, then
// the value. Upstream leaves the padding uninitialised; we send zeros.
func EncodeUpdate(key string, value []byte) []byte {
	k := []byte(key)
	if i := bytes.IndexByte(k, 0); i >= 0 {
		k = k[:i]
	}
	if len(k) > KeyFieldLen-1 {
		k = k[:KeyFieldLen-1]
	}
	b := make([]byte, KeyFieldLen+len(value))
	copy(b, k)
	copy(b[KeyFieldLen:], value)
	return b
}

// DecodeUpdate parses an UPDATE payload. The value aliases p.
func DecodeUpdate(p []byte) (key string, value []byte, err error) {
	if len(p) < KeyFieldLen {
		return "", nil, fmt.Errorf("%w (%d < %d bytes)", ErrShortUpdate, len(p), KeyFieldLen)
	}
	n := bytes.IndexByte(p[:KeyFieldLen], 0)
	if n < 0 {
		return "", nil, ErrBadUpdate
	}
	return string(p[:n]), p[KeyFieldLen:], nil
}
