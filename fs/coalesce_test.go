package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

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
	// A gap left by a write past the end reads as zeros.
	if _, err := f.WriteAt([]byte("tail"), int64(len(want))+100); err != nil {
		t.Fatal(err)
	}
	want = append(append(want, make([]byte, 100)...), "tail"...)
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

// unconfirmedBackend creates files whose confirmation fails, as a cluster does for a
// create whose node was cut off before the others had it; it counts the confirmations.
type unconfirmedBackend struct {
	*LocalBackend
	confirms *atomic.Int32
}

func (b unconfirmedBackend) Create(path string) (func() error, error) {
	if _, err := b.LocalBackend.Create(path); err != nil {
		return nil, err
	}
	return func() error { b.confirms.Add(1); return syscall.EIO }, nil
}

// The outcome of a create comes back from the close or fsync of the descriptor that
// created the file (once), and from mknod itself, which has no descriptor.
func TestCreateOutcomeFromCloseFsyncAndMknod(t *testing.T) {
	var confirms atomic.Int32
	env := mountTestWith(t, "", func(b *LocalBackend) Backend { return unconfirmedBackend{b, &confirms} }, nil)

	f, err := os.Create(env.p("closed"))
	if err != nil {
		t.Fatalf("create: %v; its outcome is the close's", err)
	}
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var pe *os.PathError
	if err := f.Close(); !errors.As(err, &pe) || pe.Err != syscall.EIO {
		t.Fatalf("close: %v, want EIO", err)
	}

	f, err = os.Create(env.p("synced"))
	if err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "fsync", f.Sync(), syscall.EIO)
	wantErrno(t, "close after the fsync reported it", f.Close(), 0)

	wantErrno(t, "mknod", syscall.Mknod(env.p("made"), syscall.S_IFREG|0o640, 0), syscall.EIO)
	if n := confirms.Load(); n != 3 {
		t.Fatalf("%d confirmations, want one per created file", n)
	}
}

// gatedBackend holds every replicated write until release is closed, as a cluster does
// while a resync holds back the messages of the healthy nodes.
type gatedBackend struct {
	*LocalBackend
	entered chan string // one path per Write that reached the backend
	release chan struct{}
}

func (b gatedBackend) Write(path string, off uint64, data []byte, truncate bool) (int, error) {
	b.entered <- path
	<-b.release
	return b.LocalBackend.Write(path, off, data, truncate)
}

// finishes runs fn, which must complete without anyone releasing a gate; the bound only
// keeps a hang from lasting until the test binary's timeout.
func finishes(t *testing.T, what string, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s waited for another handle's flush", what)
	}
}

// readIs stats and reads path and checks its content.
func readIs(path, want string) error {
	if _, err := os.Stat(path); err != nil {
		return err
	}
	got, err := os.ReadFile(path)
	if err == nil && string(got) != want {
		err = fmt.Errorf("read %q, want %q", got, want)
	}
	return err
}

// A reader of a file that a writer on this node is flushing must not wait for that
// flush (a cluster round trip, which a resync can hold back for seconds), and its close
// must not replicate, or hear the outcome of, the writer's buffered writes.
func TestReaderDoesNotWaitForWritersFlush(t *testing.T) {
	gate := gatedBackend{entered: make(chan string, 8), release: make(chan struct{})}
	env := mountTestWith(t, "", func(b *LocalBackend) Backend { gate.LocalBackend = b; return gate },
		func(db *memdb.DB) {
			for _, n := range []string{"a", "b"} {
				db.Create(n, 0, 1)
				db.Write(n, 0, []byte("old "+n), true, 0, 1)
			}
		})
	// A writer with unflushed writes: a reader's close leaves them alone.
	wb, err := os.OpenFile(env.p("b"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Before the unmount (cleanups run last first), even after a failure: nothing may
	// stay blocked in the file system.
	t.Cleanup(func() {
		close(gate.release)
		wb.Close()
	})
	if _, err := wb.WriteAt([]byte("new b"), 0); err != nil {
		t.Fatal(err)
	}
	finishes(t, "read of a file with buffered writes", func() error { return readIs(env.p("b"), "new b") })
	select {
	case p := <-gate.entered:
		t.Fatalf("a reader's close replicated the writer's buffered writes to %s", p)
	default:
	}

	// A writer whose close is stuck in the replication: reads of the file complete.
	closed := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(env.p("a"), os.O_WRONLY, 0)
		if err == nil {
			_, err = f.WriteAt([]byte("new a"), 0)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		closed <- err
	}()
	select {
	case <-gate.entered:
	case err := <-closed:
		t.Fatalf("writer's close did not reach the backend: %v", err)
	}
	finishes(t, "read of a file while its writer's close replicates", func() error {
		for i := 0; i < 3; i++ {
			if err := readIs(env.p("a"), "new a"); err != nil {
				return err
			}
		}
		return nil
	})
	select {
	case err := <-closed:
		t.Fatalf("writer's close returned before its replication was released: %v", err)
	default:
	}
}
