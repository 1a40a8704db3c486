package main

import (
	"fmt"
	"strings"
)

// options are upstream's -d/-f/-l plus path overrides, so tests and `make run` can start
// daemons without touching the system paths.
type options struct {
	debug, foreground, local, help, status bool

	mount        string // /etc/pve
	db           string // /var/lib/pve-cluster/config.db
	runDir       string // /run/pve-cluster
	pidFile      string // /run/pve-cluster.pid
	nodeName     string // short uname by default
	nodeIP       string // resolved from the node name by default
	corosyncConf string // /etc/corosync/corosync.conf
	rrdDir       string // /var/lib/rrdcached/db
}

func defaultOptions() options {
	return options{
		mount:        "/etc/pve",
		db:           "/var/lib/pve-cluster/config.db",
		runDir:       "/run/pve-cluster",
		pidFile:      "/run/pve-cluster.pid",
		corosyncConf: "/etc/corosync/corosync.conf",
		rrdDir:       "/var/lib/rrdcached/db",
	}
}

const usageText = `Usage:
  pmxcfs [OPTION…]

Help Options:
  -h, --help              Show help options

Application Options:
  -d, --debug             Turn on debug messages
  -f, --foreground        Do not daemonize server
  -l, --local             Force local mode (ignore corosync.conf, force quorum)

Not in upstream:
  --status                Say in one line whether /etc/pve is writable and why not
                          (exit 0 ready, 1 not ready, 3 not running)

Path overrides (not in upstream; for tests and development):
  --mount=DIR             Mount point (default /etc/pve)
  --db=FILE               Database (default /var/lib/pve-cluster/config.db)
  --run-dir=DIR           Run directory (default /run/pve-cluster)
  --pidfile=FILE          PID file (default /run/pve-cluster.pid)
  --nodename=NAME         Local node name (default: short host name)
  --node-ip=IP            Node IP (default: resolve the node name)
  --corosync-conf=FILE    Host corosync.conf (default /etc/corosync/corosync.conf)
  --rrd-dir=DIR           RRD files (default /var/lib/rrdcached/db)
`

// errTooManyArgs is upstream's "too many arguments" (exit 255); other errors are option
// parsing failures (exit 1), worded like GOption's.
var errTooManyArgs = fmt.Errorf("too many arguments")

// parseOptions accepts GOption-style arguments: grouped short flags (-df), long flags, and
// long values as --x=v or --x v.
func parseOptions(args []string) (options, error) {
	o := defaultOptions()
	values := map[string]*string{
		"mount": &o.mount, "db": &o.db, "run-dir": &o.runDir, "pidfile": &o.pidFile,
		"nodename": &o.nodeName, "node-ip": &o.nodeIP, "corosync-conf": &o.corosyncConf,
		"rrd-dir": &o.rrdDir,
	}
	bools := map[string]*bool{
		"debug": &o.debug, "foreground": &o.foreground, "local": &o.local, "help": &o.help,
		"status": &o.status,
	}
	short := map[byte]*bool{'d': &o.debug, 'f': &o.foreground, 'l': &o.local, 'h': &o.help}
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			rest = append(rest, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			if b, ok := bools[name]; ok && !hasVal {
				*b = true
				continue
			}
			p, ok := values[name]
			if !ok {
				return o, fmt.Errorf("Unknown option %s", a)
			}
			if !hasVal {
				if i+1 >= len(args) {
					return o, fmt.Errorf("Missing argument for %s", a)
				}
				i++
				val = args[i]
			}
			*p = val
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for j := 1; j < len(a); j++ {
				b, ok := short[a[j]]
				if !ok {
					return o, fmt.Errorf("Unknown option -%c", a[j])
				}
				*b = true
			}
		default:
			rest = append(rest, a)
		}
	}
	if len(rest) > 0 && !o.help {
		return o, errTooManyArgs
	}
	return o, nil
}
