package fs

import (
	"bytes"
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/pmxcfs-go/pmxcfs/memdb"
)

// A file written in many write() calls changes memdb once, at close: the writes are
// buffered, yet reads and stat on this node see them at once.
func TestChunkedWriteIsOneChange(t *testing.T) {
	env := mountTest(t, "", true, nil)
	f, err := os.OpenFile(env.p("big.conf"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	created := env.db.Root().Version
	want := make([]byte, 0, 512*1024)
	for i := 0; i < 128; i++ {
		chunk := bytes.Repeat([]byte{byte('a' + i%26)}, 4096)
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
		want = append(want, chunk...)
	}
	if v := env.db.Root().Version; v != created {
		t.Fatalf("memdb changed %d times before close", v-created)
	}
	if got, err := os.ReadFile(env.p("big.conf")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read before close: %d bytes, %v", len(got), err)
	}
	if st, err := os.Stat(env.p("big.conf")); err != nil || st.Size() != int64(len(want)) {
		t.Fatalf("stat before close: %v %v", st, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if v := env.db.Root().Version; v != created+1 {
		t.Fatalf("%d changes for one written file, want 1", v-created)
	}
	if got, err := env.db.ReadFile("big.conf"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("memdb after close: %d bytes, %v", len(got), err)
	}
	// A rewrite in the middle keeps the rest of the file.
	f, err = os.OpenFile(env.p("big.conf"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("XY"), 5000); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	copy(want[5000:], "XY")
	if got, _ := env.db.ReadFile("big.conf"); !bytes.Equal(got, want) {
		t.Fatal("fsync did not write the buffered range back")
	}
	f.Close()
}

// What a write() can know at once it reports at once: the 1 MiB limit and a refusal
// for lack of quorum.
func TestBufferedWriteRefusedAtOnce(t *testing.T) {
	env := mountTest(t, "", true, nil)
	writeFile(t, env.p("f"), "x")
	f, err := os.OpenFile(env.p("f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = f.WriteAt([]byte("0123456789"), 1024*1024-5)
	wantErrno(t, "write across 1 MiB", err, syscall.EFBIG)

	ro := mountTest(t, "", false, func(db *memdb.DB) { db.Create("f", 0, 1) })
	g, err := os.OpenFile(ro.p("f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	_, err = g.Write([]byte("x"))
	wantErrno(t, "write without quorum", err, syscall.EACCES)
}

// failingBackend refuses every write it is asked to replicate, as a cluster does that
// lost quorum after the write() calls, or a database on a full disk.
type failingBackend struct {
	*LocalBackend
	err error
}

func (b failingBackend) Write(string, uint64, []byte, bool) (int, error) { return 0, b.err }

// A refusal known only when the buffered writes are replicated comes back from close()
// and from fsync(); nothing is changed.
func TestBufferedWriteErrorFromCloseAndFsync(t *testing.T) {
	env := mountTestWith(t, "", func(b *LocalBackend) Backend { return failingBackend{b, syscall.ENOSPC} },
		func(db *memdb.DB) { db.Create("f", 0, 1) })
	for _, viaSync := range []bool{false, true} {
		f, err := os.OpenFile(env.p("f"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("content")); err != nil {
			t.Fatalf("buffered write: %v", err)
		}
		if viaSync {
			wantErrno(t, "fsync", f.Sync(), syscall.ENOSPC)
			f.Close()
		} else {
			err := f.Close()
			var pe *os.PathError
			if !errors.As(err, &pe) {
				t.Fatalf("close: %v, want ENOSPC", err)
			}
			wantErrno(t, "close", pe.Err, syscall.ENOSPC)
		}
		if got, _ := env.db.ReadFile("f"); len(got) != 0 {
			t.Fatalf("refused write changed the file: %q", got)
		}
	}
}

// Every descriptor that wrote into a buffer hears of its failed replication, also when
// another descriptor's close replicated it.
func TestBufferedWriteErrorReachesEveryWriter(t *testing.T) {
	env := mountTestWith(t, "", func(b *LocalBackend) Backend { return failingBackend{b, syscall.ENOSPC} },
		func(db *memdb.DB) { db.Create("f", 0, 1) })
	a, err := os.OpenFile(env.p("f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.OpenFile(env.p("f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write([]byte("from a")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt([]byte("from b"), 10); err != nil {
		t.Fatal(err)
	}
	closeErr := func(f *os.File) error {
		err := f.Close()
		var pe *os.PathError
		if errors.As(err, &pe) {
			return pe.Err
		}
		return err
	}
	wantErrno(t, "close of the descriptor that replicated", closeErr(a), syscall.ENOSPC)
	wantErrno(t, "close of the other writer", closeErr(b), syscall.ENOSPC)
	// A descriptor that only reads hears nothing.
	r, err := os.Open(env.p("f"))
	if err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "close of a reader", closeErr(r), 0)
}
