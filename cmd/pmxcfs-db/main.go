// Command pmxcfs-db checks, dumps and restores a pmxcfs config.db while the daemon
// is stopped.
package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/pmxcfs-go/pmxcfs/memdb"
	"github.com/sirupsen/logrus"
)

const defaultDB = "/var/lib/pve-cluster/config.db"

// errRunning is what every subcommand says when the daemon's lock is held.
var errRunning = errors.New("pmxcfs is running (lock held) - stop it first")

const usage = `usage: pmxcfs-db check [--db FILE]
       pmxcfs-db dump [--db FILE] DIR
       pmxcfs-db restore [--db FILE] [--force] DIR
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process exit, so tests can call it.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := args[0]
	fl := flag.NewFlagSet("pmxcfs-db "+cmd, flag.ContinueOnError)
	fl.SetOutput(stderr)
	dbPath := fl.String("db", defaultDB, "database file")
	force := false
	if cmd == "restore" {
		fl.BoolVar(&force, "force", false, "move an existing database to FILE.bak-<unix> first")
	}
	if err := fl.Parse(args[1:]); err != nil {
		return 2
	}
	// The tool prints its own results; memdb's info logs would only add noise.
	logrus.SetLevel(logrus.WarnLevel)

	var err error
	switch {
	case cmd == "check" && fl.NArg() == 0:
		err = check(*dbPath, stdout)
	case cmd == "dump" && fl.NArg() == 1:
		err = withLock(*dbPath, func() error { return dump(*dbPath, fl.Arg(0), stdout) })
	case cmd == "restore" && fl.NArg() == 1:
		err = withLock(*dbPath, func() error { return restore(*dbPath, fl.Arg(0), force, stdout) })
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "pmxcfs-db %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

func lockPath(dbPath string) string {
	return filepath.Join(filepath.Dir(dbPath), ".pmxcfs.lockfile")
}

// tryLock takes the daemon's flock without waiting. held reports that someone
// else (the daemon) holds it.
func tryLock(dbPath string) (f *os.File, held bool, err error) {
	f, err = os.OpenFile(lockPath(dbPath), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0600)
	if err != nil {
		return nil, false, fmt.Errorf("unable to open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, true, errRunning
		}
		return nil, false, fmt.Errorf("unable to lock %s: %w", lockPath(dbPath), err)
	}
	return f, false, nil
}

// withLock runs fn while holding the daemon lock, refusing when it is taken.
func withLock(dbPath string, fn func() error) error {
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o755); err != nil {
		return err
	}
	f, _, err := tryLock(dbPath)
	if err != nil {
		return err
	}
	defer f.Close()
	return fn()
}

// check loads the database the way the daemon would, from a private copy.
func check(dbPath string, out io.Writer) error {
	live := false
	if _, err := os.Stat(dbPath); err != nil {
		return err
	}
	// Without a lock file no daemon can be running; do not create one.
	if _, err := os.Stat(lockPath(dbPath)); err == nil {
		if f, held, err := tryLock(dbPath); err == nil {
			defer f.Close()
		} else if held {
			live = true
		}
	}
	db, cleanup, err := openCopy(dbPath)
	if err != nil {
		return err
	}
	defer cleanup()
	if live {
		fmt.Fprintln(out, "warning: pmxcfs is running; this is a snapshot of a live database")
	}
	index, err := memdb.ParseIndex(db.Index())
	if err != nil {
		return err
	}
	root := db.Root()
	sum := db.TreeChecksum()
	fmt.Fprintf(out, "entries: %d\n", len(index))
	fmt.Fprintf(out, "version: %d\n", root.Version)
	fmt.Fprintf(out, "checksum: %s\n", hex.EncodeToString(sum[:]))
	fmt.Fprintf(out, "vms: %d\n", len(db.VMList().VMs))
	fmt.Fprintln(out, "ok")
	return nil
}

// openCopy opens a private copy of the database, so that nothing memdb.Open does
// (WAL setup, initialising an empty file) can change the original.
func openCopy(dbPath string) (db *memdb.DB, cleanup func(), err error) {
	tmp, err := os.MkdirTemp("", "pmxcfs-db-")
	if err != nil {
		return nil, nil, err
	}
	cp := filepath.Join(tmp, "config.db")
	err = copyFile(dbPath, cp)
	// A WAL file holds committed changes not yet in the main file.
	if err == nil {
		if err = copyFile(dbPath+"-wal", cp+"-wal"); errors.Is(err, os.ErrNotExist) {
			err = nil
		}
	}
	if err == nil {
		db, err = memdb.Open(cp, memdb.Options{})
	}
	if err != nil {
		os.RemoveAll(tmp)
		return nil, nil, err
	}
	return db, func() { db.Close(); os.RemoveAll(tmp) }, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
