package main

import (
	"fmt"
	"os/exec"
	"strconv"
	"syscall"
)

// execTool replaces pvecm with a corosync tool, so its output and exit status are the
// command's own, as upstream does.
func execTool(name string, args ...string) error {
	path, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("%s not found: %v", name, err)
	}
	return syscall.Exec(path, append([]string{name}, args...), syscall.Environ())
}

func cmdStatus(h *host, _ []string, _ options) error {
	if err := h.checkConfExists(); err != nil {
		return err
	}
	cfg, err := h.readConf()
	if err != nil {
		h.warnf("%v\n", err)
	} else if totem := cfg.Totem(); len(totem.Values) > 0 {
		info := func(label, key, def string) {
			v, ok := totem.Values[key]
			if !ok {
				v = def
			}
			h.printf("%-17s %s\n", label+":", v)
		}
		h.printf("Cluster information\n-------------------\n")
		info("Name", "cluster_name", "UNKOWN?") // sic: upstream's spelling
		info("Config Version", "config_version", "-1")
		info("Transport", "transport", "knet")
		info("Secure auth", "secauth", "off")
		h.printf("\n")
	}
	return execTool("corosync-quorumtool", "-siH")
}

func cmdNodes(h *host, _ []string, _ options) error {
	if err := h.checkConfExists(); err != nil {
		return err
	}
	return execTool("corosync-quorumtool", "-l")
}

func cmdExpected(h *host, pos []string, _ options) error {
	n, err := strconv.Atoi(pos[0])
	if err != nil {
		return fmt.Errorf("expected: type check ('integer') failed - got '%s'", pos[0])
	}
	if n < 1 {
		return fmt.Errorf("expected: value must have a minimum value of 1")
	}
	if err := h.checkConfExists(); err != nil {
		return err
	}
	return execTool("corosync-quorumtool", "-e", strconv.Itoa(n))
}
