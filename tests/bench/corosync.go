package bench

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// CorosyncConf renders the corosync.conf shared by all n nodes: the layout a
// Proxmox VE cluster uses (knet, votequorum, nodelist with name/nodeid/
// quorum_votes/ring0_addr, non-zero config_version, which pmxcfs parses) with a
// short token so a partition is noticed within a few seconds, logging to the
// node's /var/log/corosync.
func CorosyncConf(clusterName, net string, n, tokenMS int) string {
	var s strings.Builder
	s.WriteString("logging {\n  debug: off\n  to_syslog: no\n  to_stderr: no\n  to_logfile: yes\n  logfile: /var/log/corosync/corosync.log\n  timestamp: hires\n}\n\n")
	s.WriteString("nodelist {\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&s, "  node {\n    name: %s\n    nodeid: %d\n    quorum_votes: 1\n    ring0_addr: %s.%d\n  }\n", NodeName(i), i, net, i)
	}
	s.WriteString("}\n\nquorum {\n  provider: corosync_votequorum\n}\n\n")
	fmt.Fprintf(&s, "totem {\n  cluster_name: %s\n  config_version: 1\n  interface {\n    linknumber: 0\n  }\n"+
		"  ip_version: ipv4-6\n  link_mode: passive\n  secauth: on\n  transport: knet\n  version: 2\n  token: %d\n}\n", clusterName, tokenMS)
	return s.String()
}

var quorateLine = regexp.MustCompile(`(?m)^Quorate:\s+(Yes|No)\s*$`)

// Quorate asks corosync-quorumtool inside node i whether the node is quorate.
// An error means the question could not be answered (e.g. corosync is down).
func (b *Bench) Quorate(i int) (bool, error) {
	// corosync-quorumtool exits non-zero when inquorate, so judge by its output.
	out, err := b.exec(i, 10*time.Second, "corosync-quorumtool", "-s")
	if m := quorateLine.FindStringSubmatch(out); m != nil {
		return m[1] == "Yes", nil
	}
	if err == nil {
		err = fmt.Errorf("node %d: no Quorate line in corosync-quorumtool output: %s", i, out)
	}
	return false, err
}

// WaitQuorum waits until each node (all when none given) is quorate.
func (b *Bench) WaitQuorum(timeout time.Duration, nodes ...int) error {
	return b.waitAll(timeout, nodes, "quorate", func(i int) bool {
		q, err := b.Quorate(i)
		return err == nil && q
	})
}

// WaitInquorate waits until each given node (all when none given) has lost quorum.
func (b *Bench) WaitInquorate(timeout time.Duration, nodes ...int) error {
	return b.waitAll(timeout, nodes, "inquorate", func(i int) bool {
		q, err := b.Quorate(i)
		return err == nil && !q
	})
}

// waitAll polls cond for every node in nodes (all nodes when empty) until all
// hold, sharing one deadline.
func (b *Bench) waitAll(timeout time.Duration, nodes []int, what string, cond func(i int) bool) error {
	if len(nodes) == 0 {
		for i := 1; i <= b.N(); i++ {
			nodes = append(nodes, i)
		}
	}
	for _, i := range nodes {
		if _, err := b.node(i); err != nil {
			return err
		}
	}
	pending := nodes
	ok := poll(timeout, 200*time.Millisecond, func() bool {
		var still []int
		for _, i := range pending {
			if !cond(i) {
				still = append(still, i)
			}
		}
		pending = still
		return len(pending) == 0
	})
	if !ok {
		return fmt.Errorf("bench: nodes %v not %s after %v", pending, what, timeout)
	}
	return nil
}
