// Command pvecm manages the corosync cluster that pmxcfs replicates /etc/pve over: it creates
// a cluster, joins this node to one over SSH, adds and removes nodes, and shows the cluster
// state. It edits corosync.conf only through /etc/pve, as upstream's pvecm does, so that
// pmxcfs carries every change to all nodes and reloads corosync.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

const usage = `USAGE: pvecm <COMMAND> [ARGS] [OPTIONS]

  pvecm create <clustername> [--nodeid N] [--votes N] [--linkX ADDR[,priority=N]]
                             [--token-coefficient N]
  pvecm add <hostname> [--use_ssh] [--force] [--nodeid N] [--votes N] [--linkX ADDR[,priority=N]]
  pvecm addnode <node> [--force] [--nodeid N] [--votes N] [--linkX ADDR[,priority=N]]
                       [--new_node_ip IP] [--apiversion N]
  pvecm delnode <node>
  pvecm expected <expected>
  pvecm status
  pvecm nodes
  pvecm apiver
  pvecm help
`

// joinAPIVersion is the join protocol version pvecm reports and accepts (upstream's
// JOIN_API_VERSION 1 with an age of 1: peers at version 0 or 1 can join each other).
const (
	joinAPIVersion = 1
	joinAPIAge     = 1
)

// optionSpec lists a command's options: true for booleans, false for options with a value.
type optionSpec map[string]bool

var linkOptions = func() optionSpec {
	o := optionSpec{}
	for i := 0; i <= 7; i++ {
		o[fmt.Sprintf("link%d", i)] = false
	}
	return o
}()

func withLinks(o optionSpec) optionSpec {
	for k, v := range linkOptions {
		o[k] = v
	}
	return o
}

type command struct {
	positional []string // names of the required positional arguments
	options    optionSpec
	run        func(h *host, pos []string, opts options) error
}

var commands = map[string]command{
	"create": {[]string{"clustername"}, withLinks(optionSpec{"nodeid": false, "votes": false, "token-coefficient": false}), cmdCreate},
	"add":    {[]string{"hostname"}, withLinks(optionSpec{"nodeid": false, "votes": false, "force": true, "use_ssh": true, "fingerprint": false}), cmdAdd},
	"addnode": {[]string{"node"}, withLinks(optionSpec{"nodeid": false, "votes": false, "force": true,
		"new_node_ip": false, "apiversion": false}), cmdAddNode},
	"delnode":  {[]string{"node"}, optionSpec{}, cmdDelNode},
	"expected": {[]string{"expected"}, optionSpec{}, cmdExpected},
	"status":   {nil, optionSpec{}, cmdStatus},
	"nodes":    {nil, optionSpec{}, cmdNodes},
	"apiver": {nil, optionSpec{}, func(h *host, _ []string, _ options) error {
		fmt.Fprintln(h.stdout, joinAPIVersion)
		return nil
	}},
}

func main() {
	os.Exit(run(os.Args[1:], newHost()))
}

// run executes one pvecm invocation and returns its exit status: 0, 255 for a failed command
// (as upstream's CLI), 2 for a usage error.
func run(argv []string, h *host) int {
	if len(argv) == 0 || argv[0] == "help" || argv[0] == "--help" || argv[0] == "-h" {
		fmt.Fprint(h.stdout, usage)
		if len(argv) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[argv[0]]
	if !ok {
		fmt.Fprintf(h.stderr, "unknown command 'pvecm %s'\n%s", argv[0], usage)
		return 2
	}
	pos, opts, err := parseArgs(argv[1:], cmd.options)
	if err == nil && len(pos) != len(cmd.positional) {
		err = fmt.Errorf("expected %d argument(s) (%s), got %d", len(cmd.positional), strings.Join(cmd.positional, ", "), len(pos))
	}
	if err != nil {
		fmt.Fprintf(h.stderr, "400 wrong number of arguments or bad option: %v\n%s", err, usage)
		return 2
	}
	if err := cmd.run(h, pos, opts); err != nil {
		msg := err.Error()
		if !strings.HasSuffix(msg, "\n") {
			msg += "\n"
		}
		fmt.Fprint(h.stderr, msg)
		return 255
	}
	return 0
}

// options are the parsed --name value pairs; booleans hold "1" or "0".
type options map[string]string

func (o options) has(name string) bool { _, ok := o[name]; return ok }

func (o options) flag(name string) bool { return o[name] == "1" }

// intOpt returns the integer value of name, def when it is absent.
func (o options) intOpt(name string, def, min int) (int, error) {
	v, ok := o[name]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s: type check ('integer') failed - got '%s'", name, v)
	}
	if n < min {
		return 0, fmt.Errorf("%s: value must have a minimum value of %d", name, min)
	}
	return n, nil
}

// parseArgs splits argv into positional arguments and options. Options are written
// --name value, --name=value or -name value as with upstream's CLI; a boolean may stand alone
// or be followed by 1/0 (pvecm add passes "--force 1" to the remote addnode).
func parseArgs(argv []string, spec optionSpec) ([]string, options, error) {
	var pos []string
	opts := options{}
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		value, hasValue := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, v, true
		}
		isBool, known := spec[name]
		if !known {
			return nil, nil, fmt.Errorf("unknown option '%s'", a)
		}
		if isBool {
			if !hasValue && i+1 < len(argv) {
				if _, ok := boolValue(argv[i+1]); ok {
					value, hasValue = argv[i+1], true
					i++
				}
			}
			if !hasValue {
				value = "1"
			}
			b, ok := boolValue(value)
			if !ok {
				return nil, nil, fmt.Errorf("%s: '%s' is not a boolean", name, value)
			}
			opts[name] = b
			continue
		}
		if !hasValue {
			if i+1 >= len(argv) {
				return nil, nil, fmt.Errorf("option '%s' needs a value", a)
			}
			i++
			value = argv[i]
		}
		opts[name] = value
	}
	return pos, opts, nil
}

func boolValue(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "1", "yes", "true", "on":
		return "1", true
	case "0", "no", "false", "off":
		return "0", true
	}
	return "", false
}
