package clusterlog

import (
	"encoding/binary"
	"testing"
)

// FuzzUnmarshal: never panic; whatever decodes re-encodes to the same bytes (the 4
// trailing bytes and prev/next excepted).
func FuzzUnmarshal(f *testing.F) {
	e, _ := Pack(2, "n1", "root@pam", "cluster", 4242, 1700000000, 6, "hello \"w\" ä")
	b, _ := e.Marshal()
	f.Add(b)
	f.Add(b[:48])
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Unmarshal(b)
		if err != nil {
			return
		}
		re, err := e.Marshal()
		if err != nil {
			// only the 4096 limit may refuse what the receiver accepts
			if len(b) <= MaxEntrySize {
				t.Fatalf("decoded entry does not re-encode: %v", err)
			}
			return
		}
		if string(re[8:len(re)-4]) != string(b[8:len(b)-4]) {
			t.Fatal("re-encoding differs")
		}
	})
}

// FuzzState: a peer's ring bytes (however damaged) must merge, sort and dump without
// panicking or looping, and the merged log must stay a well-formed ring.
func FuzzState(f *testing.F) {
	l := New(nil)
	for i := 0; i < 20; i++ {
		l.Add("n2", "root", "t", 1, uint32(1000+i), 6, "some message")
	}
	st := l.State()
	f.Add(st[:512], uint32(0))
	f.Add(st[:512], uint32(8))
	f.Fuzz(func(t *testing.T, prefix []byte, cpos uint32) {
		s := make([]byte, 4096*10)
		copy(s, prefix)
		binary.LittleEndian.PutUint32(s[0:], uint32(len(s)))
		if cpos != 0 {
			binary.LittleEndian.PutUint32(s[4:], cpos)
		}
		local := New(nil)
		local.Add("n1", "root", "cluster", 1, 999, 6, "starting cluster log")
		if err := local.Merge([][]byte{nil, s}, 0); err != nil {
			t.Fatal(err)
		}
		dumpJSON(ring(s), "", 1000)
		ring(s).sorted()
		out := local.State()
		// everything we hold must read back as valid entries
		r := ring(out)
		pos := r.cpos()
		for steps := 0; pos != 0 && steps < r.maxSteps(); steps++ {
			v, ok := r.entryAt(pos)
			if !ok {
				t.Fatalf("merged ring has a bad entry at %d", pos)
			}
			if r.wrapsIntoNew(pos, v) {
				break
			}
			pos = v.h.prev
		}
	})
}
