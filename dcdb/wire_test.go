package dcdb

import (
	"bytes"
	"errors"
	"testing"

	"github.com/pmxcfs-go/pmxcfs/memdb"
)

// fuse builds a raw fuse payload field by field (docs/protocol.md#fuse-message).
func fuse(size, off, pathLen, toLen, flags uint32, rest string) []byte {
	b := make([]byte, 20)
	for i, v := range []uint32{size, off, pathLen, toLen, flags} {
		le.PutUint32(b[4*i:], v)
	}
	return append(b, rest...)
}

func TestDecodeFuseChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"short", make([]byte, 19), ErrShortFuse},
		{"length too big", fuse(1, 0, 2, 0, 0, "a\x00xy"), ErrBadFuse},
		{"length too small", fuse(3, 0, 2, 0, 0, "a\x00xy"), ErrBadFuse},
		{"path unterminated", fuse(0, 0, 2, 0, 0, "ab"), ErrBadFuse},
		{"to unterminated", fuse(0, 0, 2, 2, 0, "a\x00bc"), ErrBadFuse},
		{"size overflow", fuse(0xffffffff, 0, 2, 0, 0, "a\x00"), ErrBadFuse},
	} {
		if _, err := DecodeFuse(tc.in); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	m, err := DecodeFuse(fuse(2, 7, 2, 3, 1, "a\x00bc\x00xy"))
	if err != nil || m.Path != "a" || m.To != "bc" || string(m.Data) != "xy" || m.Offset != 7 || m.Flags != 1 || !m.HasPath || !m.HasTo {
		t.Fatalf("%+v %v", m, err)
	}
	m, err = DecodeFuse(fuse(0, 0, 0, 0, 0, ""))
	if err != nil || m.HasPath || m.HasTo || m.Data != nil {
		t.Fatalf("empty message: %+v %v", m, err)
	}
}

func TestDecodeUnlockChecks(t *testing.T) {
	if _, err := DecodeUnlock(make([]byte, 32)); !errors.Is(err, ErrShortUnlock) {
		t.Fatal(err)
	}
	if _, err := DecodeUnlock(append(make([]byte, 32), 'a')); !errors.Is(err, ErrBadUnlock) {
		t.Fatal(err)
	}
	in := UnlockMessage{Path: "priv/lock/x"}
	in.Csum[0], in.Csum[31] = 1, 2
	out, err := DecodeUnlock(in.Encode())
	if err != nil || out != in {
		t.Fatalf("%+v %v", out, err)
	}
}

func TestDecodeRecordChecks(t *testing.T) {
	good := EncodeRecord(&memdb.SyncRecord{Parent: 1, Inode: 2, Version: 3, Writer: 4, Mtime: 5,
		Type: memdb.TypeReg, Name: "n", Data: []byte("data")})
	if len(good) != 41+2+4 {
		t.Fatalf("record is %d bytes", len(good))
	}
	bad := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"short", good[:39], ErrShortRecord},
		{"no type", good[:40], ErrShortRecord},
		{"type", bad(func(b []byte) []byte { b[40] = 1; return b }), ErrBadRecordType},
		{"length", good[:len(good)-1], ErrBadRecord},
		{"name", bad(func(b []byte) []byte { b[42] = 'x'; return b }), ErrBadRecord},
		{"namelen 0", bad(func(b []byte) []byte { le.PutUint32(b[36:], 0); le.PutUint32(b[32:], 6); return b }), ErrBadRecord},
	} {
		if _, err := DecodeRecord(tc.in); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestDifferingInodesPastMemberEnd(t *testing.T) {
	e := func(ino uint64, d byte) memdb.IndexEntry { return memdb.IndexEntry{Inode: ino, Digest: [32]byte{d}} }
	leader := []memdb.IndexEntry{e(0, 9), e(2, 1), e(5, 1), e(7, 1)}
	got := DifferingInodes(leader, [][]memdb.IndexEntry{
		{e(0, 8), e(2, 1), e(3, 1)}, // root differs; 5 and 7 lie past its end
		{e(0, 9), e(2, 2), e(5, 1), e(7, 1)},
	})
	if want := []uint64{0, 2, 5, 7}; len(got) != len(want) || got[0] != 0 || got[1] != 2 || got[2] != 5 || got[3] != 7 {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func FuzzDecodeFuse(f *testing.F) {
	f.Add(fuse(2, 7, 2, 3, 1, "a\x00bc\x00xy"))
	f.Add(fuse(0, 0, 0, 0, 0, ""))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeFuse(b)
		if err != nil {
			return
		}
		again, err := DecodeFuse(m.Encode())
		if err != nil || again.Path != m.Path || again.To != m.To || !bytes.Equal(again.Data, m.Data) ||
			again.HasPath != m.HasPath || again.HasTo != m.HasTo || again.Offset != m.Offset || again.Flags != m.Flags {
			t.Fatalf("round trip: %+v -> %+v (%v)", m, again, err)
		}
	})
}

func FuzzDecodeUnlock(f *testing.F) {
	f.Add(append(make([]byte, 32), "priv/lock/a\x00"...))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeUnlock(b)
		if err != nil {
			return
		}
		if again, err := DecodeUnlock(m.Encode()); err != nil || again != m {
			t.Fatalf("round trip: %+v -> %+v (%v)", m, again, err)
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(EncodeRecord(&memdb.SyncRecord{Inode: 2, Type: memdb.TypeReg, Name: "n", Data: []byte("x")}))
	f.Add(EncodeRecord(&memdb.SyncRecord{Type: memdb.TypeDir}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			return
		}
		again, err := DecodeRecord(EncodeRecord(&r))
		if err != nil || again.Name != r.Name || !bytes.Equal(again.Data, r.Data) || again.Inode != r.Inode ||
			again.Parent != r.Parent || again.Version != r.Version || again.Type != r.Type {
			t.Fatalf("round trip: %+v -> %+v (%v)", r, again, err)
		}
	})
}
