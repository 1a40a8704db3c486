// Command pmxcfs is the Proxmox cluster file system daemon: it loads config.db into memory,
// mounts it at /etc/pve and, in cluster mode, replicates it over corosync.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/internal/logging"
)

var log = logging.For("main")

// Upstream exits with -1 (shown as 255) on every start-up failure.
const exitFailure = 255

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	// The tree is the daemon's whole live heap (at most memdb.MaxFSSize of data) and is
	// long-lived, so the default GOGC=100 would let the heap, and the RSS an operator
	// compares with upstream's, grow to twice the data between collections. 30 keeps
	// it near the data at a few more (short, concurrent) collections. GOGC overrides.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(30)
	}
	logging.Setup(false, os.Getenv(envNoSyslog) == "")
	opts, err := parseOptions(args)
	if errors.Is(err, errTooManyArgs) {
		log.Error("too many arguments")
		return exitFailure
	}
	if err != nil {
		log.Errorf("option parsing failed: %s", err)
		return 1
	}
	if opts.help {
		fmt.Print(usageText)
		return 0
	}
	logging.SetDebug(opts.debug)
	if err := opts.makeAbsolute(); err != nil {
		log.Errorf("option parsing failed: %s", err)
		return 1
	}
	if opts.status {
		return printStatus(opts)
	}
	if !opts.foreground && !isDaemonChild() {
		return startDetachedChild()
	}
	defer startTrace()()
	d := &daemonState{opts: opts}
	if err := d.start(); err != nil {
		log.Error(err)
		d.stop()
		return exitFailure
	}
	return d.serve()
}

// makeAbsolute resolves path options, because the detached daemon changes to "/".
func (o *options) makeAbsolute() error {
	def := defaultOptions()
	if o.pidFile == def.pidFile && o.runDir != def.runDir {
		// Daemons started with their own run directory must not share one PID file.
		o.pidFile = strings.TrimRight(o.runDir, "/") + ".pid"
	}
	for _, p := range []*string{&o.mount, &o.db, &o.runDir, &o.pidFile, &o.corosyncConf, &o.rrdDir} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	return nil
}

func (o *options) lockFile() string { return filepath.Join(filepath.Dir(o.db), ".pmxcfs.lockfile") }

func (o *options) restartFlag() string { return filepath.Join(o.runDir, "cfs-restart-flag") }

// localNodeName is the host name cut at its first dot, as upstream takes it from uname.
func localNodeName() (string, error) {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "", err
	}
	var b strings.Builder
	for _, c := range u.Nodename {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	name, _, _ := strings.Cut(b.String(), ".")
	return name, nil
}

// lookupNodeIP returns the first address of the node name that is not loopback, IPv4 or IPv6
// in resolver order, which becomes the node's default "nodeip".
func lookupNodeIP(name string) (string, bool) {
	ips, err := net.LookupIP(name)
	if err != nil {
		return "", false
	}
	for _, ip := range ips {
		if v4 := ip.To4(); v4 != nil {
			if v4[0] != 127 {
				return v4.String(), true
			}
		} else if !ip.Equal(net.IPv6loopback) {
			return ip.String(), true
		}
	}
	return "", false
}

func lookupGroupID(name string) (uint32, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	id, err := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(id), err
}

// acquireLock takes the daemon lock like upstream: 11 non-blocking attempts, 1 s apart.
// The fd stays open for the life of the process.
func acquireLock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0600)
	if err != nil {
		return nil, fmt.Errorf("unable to create lock '%s': %s", path, errnoText(err))
	}
	for i := 10; ; i-- {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if i == 0 {
			f.Close()
			return nil, fmt.Errorf("unable to acquire pmxcfs lock: %s", errnoText(err))
		}
		if i == 10 {
			log.Info("unable to acquire pmxcfs lock - trying again")
		}
		time.Sleep(time.Second)
	}
}

// errnoText gives strerror's wording for errno errors, as upstream's messages use it.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		s := errno.Error()
		return strings.ToUpper(s[:1]) + s[1:]
	}
	return err.Error()
}

// notifySystemd reports state to systemd when it started us with Type=notify.
func notifySystemd(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.WithError(err).Debug("sd_notify failed")
	}
}

func waitForSignal(done <-chan struct{}) os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	signal.Ignore(syscall.SIGPIPE)
	select {
	case s := <-ch:
		return s
	case <-done:
		return nil
	}
}

func init() {
	// Keep logrus' own fatal path from skipping our shutdown.
	logrus.StandardLogger().ExitFunc = func(code int) { os.Exit(code) }
}
