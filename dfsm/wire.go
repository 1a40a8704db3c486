package dfsm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// MsgType is the base header's type field (docs/protocol.md#message-types).
type MsgType uint16

const (
	MsgNormal         MsgType = 0
	MsgSyncStart      MsgType = 1
	MsgState          MsgType = 2
	MsgUpdate         MsgType = 3
	MsgUpdateComplete MsgType = 4
	MsgVerifyRequest  MsgType = 5
	MsgVerify         MsgType = 6
)

func (t MsgType) String() string {
	switch t {
	case MsgNormal:
		return "NORMAL"
	case MsgSyncStart:
		return "SYNC_START"
	case MsgState:
		return "STATE"
	case MsgUpdate:
		return "UPDATE"
	case MsgUpdateComplete:
		return "UPDATE_COMPLETE"
	case MsgVerifyRequest:
		return "VERIFY_REQUEST"
	case MsgVerify:
		return "VERIFY"
	}
	return fmt.Sprintf("TYPE(%d)", uint16(t))
}

// Header sizes. Upstream structs are in host byte order; every platform
// Proxmox runs on is little endian, so the wire is little endian.
const (
	BaseHeaderLen   = 16
	NormalHeaderLen = 24
	StateHeaderLen  = 32
	// ChecksumLen is the size of the VERIFY checksum (SHA-256).
	ChecksumLen = 32
)

var le = binary.LittleEndian

// Decoding errors. Each one makes the receiving engine leave the group.
var (
	ErrShortMessage      = errors.New("dfsm: message shorter than its header")
	ErrBadVerifyRequest  = errors.New("dfsm: VERIFY_REQUEST payload is not 8 bytes")
	ErrBadVerifyResponse = errors.New("dfsm: VERIFY payload is not 40 bytes")
)

// Header is the 16-byte base header every message starts with.
type Header struct {
	Type            MsgType
	Subtype         uint16
	ProtocolVersion uint32
	Time            uint32
	Reserved        uint32
}

// Epoch identifies one synchronisation round: the creator's per-process
// counter, the creation time and the creator's identity.
type Epoch struct {
	Counter uint32
	Time    uint32
	NodeID  uint32
	PID     uint32
}

func (e Epoch) String() string {
	return fmt.Sprintf("%d/%d/%d/%d", e.Counter, e.Time, e.NodeID, e.PID)
}

// Message is a decoded DFSM message. Count is meaningful for NORMAL messages
// only, Epoch for every other type.
type Message struct {
	Header
	Count   uint64
	Epoch   Epoch
	Payload []byte
}

// IsNormal reports whether the message uses the 24-byte NORMAL header; every
// other type, known or not, uses the 32-byte state header as upstream does.
func (m *Message) IsNormal() bool { return m.Type == MsgNormal }

// DecodeHeader reads the base header.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < BaseHeaderLen {
		return Header{}, fmt.Errorf("%w (%d bytes)", ErrShortMessage, len(b))
	}
	return Header{
		Type:            MsgType(le.Uint16(b[0:])),
		Subtype:         le.Uint16(b[2:]),
		ProtocolVersion: le.Uint32(b[4:]),
		Time:            le.Uint32(b[8:]),
		Reserved:        le.Uint32(b[12:]),
	}, nil
}

// Decode parses a whole message. The payload aliases b.
func Decode(b []byte) (Message, error) {
	h, err := DecodeHeader(b)
	if err != nil {
		return Message{}, err
	}
	m := Message{Header: h}
	if h.Type == MsgNormal {
		if len(b) < NormalHeaderLen {
			return Message{}, fmt.Errorf("%w (NORMAL, %d bytes)", ErrShortMessage, len(b))
		}
		m.Count = le.Uint64(b[16:])
		m.Payload = b[NormalHeaderLen:]
		return m, nil
	}
	if len(b) < StateHeaderLen {
		return Message{}, fmt.Errorf("%w (%s, %d bytes)", ErrShortMessage, h.Type, len(b))
	}
	m.Epoch = decodeEpoch(b[16:])
	m.Payload = b[StateHeaderLen:]
	return m, nil
}

func decodeEpoch(b []byte) Epoch {
	return Epoch{
		Counter: le.Uint32(b[0:]),
		Time:    le.Uint32(b[4:]),
		NodeID:  le.Uint32(b[8:]),
		PID:     le.Uint32(b[12:]),
	}
}

// Encode returns the wire bytes of m.
func (m *Message) Encode() []byte {
	hl := StateHeaderLen
	if m.IsNormal() {
		hl = NormalHeaderLen
	}
	b := make([]byte, hl+len(m.Payload))
	le.PutUint16(b[0:], uint16(m.Type))
	le.PutUint16(b[2:], m.Subtype)
	le.PutUint32(b[4:], m.ProtocolVersion)
	le.PutUint32(b[8:], m.Time)
	le.PutUint32(b[12:], m.Reserved)
	if m.IsNormal() {
		le.PutUint64(b[16:], m.Count)
	} else {
		le.PutUint32(b[16:], m.Epoch.Counter)
		le.PutUint32(b[20:], m.Epoch.Time)
		le.PutUint32(b[24:], m.Epoch.NodeID)
		le.PutUint32(b[28:], m.Epoch.PID)
	}
	copy(b[hl:], m.Payload)
	return b
}

// EncodeVerifyRequest is the VERIFY_REQUEST payload.
func EncodeVerifyRequest(id uint64) []byte {
	return le.AppendUint64(nil, id)
}

// DecodeVerifyRequest parses a VERIFY_REQUEST payload (exactly 8 bytes).
func DecodeVerifyRequest(p []byte) (uint64, error) {
	if len(p) != 8 {
		return 0, fmt.Errorf("%w (%d bytes)", ErrBadVerifyRequest, len(p))
	}
	return le.Uint64(p), nil
}

// EncodeVerify is the VERIFY payload: request id, then the checksum.
func EncodeVerify(id uint64, sum [ChecksumLen]byte) []byte {
	return append(le.AppendUint64(nil, id), sum[:]...)
}

// DecodeVerify parses a VERIFY payload (exactly 40 bytes).
func DecodeVerify(p []byte) (uint64, [ChecksumLen]byte, error) {
	var sum [ChecksumLen]byte
	if len(p) != 8+ChecksumLen {
		return 0, sum, fmt.Errorf("%w (%d bytes)", ErrBadVerifyResponse, len(p))
	}
	copy(sum[:], p[8:])
	return le.Uint64(p), sum, nil
}
