package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pmxcfs-go/pmxcfs/corosyncconf"
	"github.com/pmxcfs-go/pmxcfs/qb/qbclient"
)

var nodeNameFormat = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$`)

func cmdCreate(h *host, pos []string, opts options) error {
	name := pos[0]
	if len(name) > 15 {
		return errors.New("clustername: value may only be 15 characters long")
	}
	if !nodeNameFormat.MatchString(name) {
		return fmt.Errorf("clustername: value does not look like a valid node name")
	}
	nodeID, err := opts.intOpt("nodeid", 1, 1)
	if err != nil {
		return err
	}
	votes, err := opts.intOpt("votes", 1, 1)
	if err != nil {
		return err
	}
	coeff, err := opts.intOpt("token-coefficient", 125, 0)
	if err != nil {
		return err
	}
	links, err := parseLinks(opts)
	if err != nil {
		return err
	}
	if _, err := os.Stat(h.clusterConf()); err == nil {
		return fmt.Errorf("cluster config '%s' already exists", h.clusterConf())
	}
	if err := h.checkMounted(); err != nil {
		return err
	}
	return h.withLocalLock(func() error {
		if err := h.setupRootKey(); err != nil {
			return err
		}
		h.linkAuthorizedKeys()
		if _, err := os.Stat(h.authKey()); err != nil {
			os.MkdirAll(h.corosyncDir, 0o755)
			if err := h.runCmd("corosync-keygen", "-l", "-k", h.authKey()); err != nil {
				return errors.New("no authentication key available")
			}
		}
		node, err := nodeName()
		if err != nil {
			return err
		}
		if len(links) == 0 {
			ip, err := nodeIP(node)
			if err != nil {
				return err
			}
			links[0] = corosyncconf.Link{Address: ip}
		}
		cfg := corosyncconf.NewClusterConfig(name, node, nodeID, votes, links, &coeff)
		h.printf("Writing corosync config to %s\n", h.clusterConf())
		if err := h.atomicWriteConf(cfg); err != nil {
			return err
		}
		if err := h.mergeAuthorizedKeys(); err != nil {
			h.warnf("%v\n", err)
		}
		if err := h.genLocalDirs(node); err != nil {
			return err
		}
		h.printf("Restart corosync and cluster filesystem\n")
		return h.service("restart", "corosync", "pve-cluster")
	})
}

// parseLinks reads --link0..--link7: "ADDRESS" or "address=ADDRESS[,priority=N]".
func parseLinks(opts options) (map[int]corosyncconf.Link, error) {
	links := map[int]corosyncconf.Link{}
	for i := 0; i <= corosyncconf.MaxLink; i++ {
		v, ok := opts[fmt.Sprintf("link%d", i)]
		if !ok {
			continue
		}
		var l corosyncconf.Link
		for _, part := range strings.Split(v, ",") {
			key, val, hasKey := strings.Cut(part, "=")
			if !hasKey {
				key, val = "address", part
			}
			switch key {
			case "address":
				l.Address = val
			case "priority":
				p, err := strconv.Atoi(val)
				if err != nil || p < 0 || p > 255 {
					return nil, fmt.Errorf("link%d: invalid priority '%s'", i, val)
				}
				l.Priority = p
			default:
				return nil, fmt.Errorf("link%d: unknown property '%s'", i, key)
			}
		}
		if l.Address == "" {
			return nil, fmt.Errorf("link%d: missing address", i)
		}
		links[i] = l
	}
	return links, nil
}

func (h *host) readConf() (*corosyncconf.Config, error) {
	data, err := os.ReadFile(h.clusterConf())
	if err != nil {
		return nil, err
	}
	return corosyncconf.Parse(data)
}

// atomicWriteConf raises config_version and installs the file as pvecm does: written as
// corosync.conf.new, then renamed over corosync.conf. The rename is what makes every node's
// pmxcfs copy it to /etc/corosync and the originating node reload corosync.
func (h *host) atomicWriteConf(cfg *corosyncconf.Config) error {
	if err := cfg.BumpVersion(); err != nil {
		return err
	}
	tmp := h.clusterConf() + ".new"
	if err := writePVE(tmp, []byte(cfg.Format())); err != nil {
		return err
	}
	if err := os.Rename(tmp, h.clusterConf()); err != nil {
		return fmt.Errorf("activating corosync.conf.new failed - %v", err)
	}
	return nil
}

// genLocalDirs creates the per-node directories a Proxmox VE node expects in /etc/pve.
func (h *host) genLocalDirs(node string) error {
	if err := h.checkMounted(); err != nil {
		return err
	}
	for _, d := range []string{"priv", "nodes", "nodes/" + node, "nodes/" + node + "/lxc",
		"nodes/" + node + "/qemu-server", "nodes/" + node + "/openvz", "nodes/" + node + "/priv"} {
		if err := os.Mkdir(h.pve(d), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("unable to create directory '%s' - %v", h.pve(d), err)
		}
	}
	return nil
}

// clusterLog adds a message to the cluster log through pmxcfs's IPC, as PVE's log_msg does;
// failing to log does not fail the command.
func clusterLog(msg string) {
	c, err := qbclient.Connect("pve2")
	if err != nil {
		return
	}
	defer c.Close()
	const notice = 5
	ident, tag := "root@pam\x00", "pvecm\x00"
	req := []byte{notice, byte(len(ident)), byte(len(tag))}
	req = append(req, ident+tag+msg+"\x00"...)
	c.Send(7, req)
}

// withConfigLock serialises corosync.conf changes: locally, and cluster-wide once the
// cluster has more than one member.
func (h *host) withConfigLock(fn func() error) error {
	return h.withLocalLock(func() error {
		if h.memberCount() > 1 {
			return h.withClusterLock("file-corosync_conf", 10*time.Second, fn)
		}
		return fn()
	})
}

// addNodeRequest is what a joining node asks for (pvecm addnode's options).
type addNodeRequest struct {
	name      string
	nodeID    int // 0: pick the lowest free id
	votes     int // -1: keep an existing node's votes, else 1
	force     bool
	links     map[int]corosyncconf.Link
	newNodeIP string
	apiVer    int
}

func cmdAddNode(h *host, pos []string, opts options) error {
	req := addNodeRequest{name: pos[0], force: opts.flag("force"), newNodeIP: opts["new_node_ip"]}
	var err error
	if req.nodeID, err = opts.intOpt("nodeid", 0, 1); err != nil {
		return err
	}
	if req.votes, err = opts.intOpt("votes", -1, 0); err != nil {
		return err
	}
	if req.apiVer, err = opts.intOpt("apiversion", 0, 0); err != nil {
		return err
	}
	if req.links, err = parseLinks(opts); err != nil {
		return err
	}
	if !nodeNameFormat.MatchString(req.name) {
		return fmt.Errorf("node: invalid format - value does not look like a valid node name")
	}
	if min := joinAPIVersion - joinAPIAge; req.apiVer < min {
		return fmt.Errorf("error: unsupported old API version on joining node (%d), cluster node has %d and supports >= %d. Please upgrade node before joining", req.apiVer, joinAPIVersion, min)
	}
	return h.changeConf(func(cfg *corosyncconf.Config) error {
		msgs, err := addNode(cfg, req)
		for _, m := range msgs {
			h.printf("%s\n", m)
		}
		if err != nil {
			return err
		}
		if err := h.genLocalDirs(req.name); err != nil {
			return err
		}
		if err := h.mergeAuthorizedKeys(); err != nil {
			h.warnf("%v\n", err)
		}
		clusterLog("adding node " + req.name + " to cluster")
		return nil
	})
}

// changeConf edits the cluster's corosync.conf, with quorum and under the configuration
// lock, and installs the result.
func (h *host) changeConf(edit func(cfg *corosyncconf.Config) error) error {
	if err := h.checkQuorum(); err != nil {
		return err
	}
	return h.withConfigLock(func() error {
		cfg, err := h.readConf()
		if err != nil {
			return err
		}
		if err := edit(cfg); err != nil {
			return err
		}
		return h.atomicWriteConf(cfg)
	})
}

// addNode adds (or, with force, rewrites) a node in cfg's nodelist, with upstream's checks:
// no address reused, the same links as the cluster, the lowest free node id.
func addNode(cfg *corosyncconf.Config, req addNodeRequest) (msgs []string, err error) {
	nodes, err := cfg.Nodes()
	if err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, errors.New("invalid corosync.conf: no nodes in nodelist")
	}
	names := make([]string, 0, len(nodes))
	for n := range nodes {
		names = append(names, n)
	}
	sort.Strings(names)

	links := map[int]corosyncconf.Link{}
	for k, v := range req.links {
		links[k] = v
	}
	for _, l := range links {
		for _, other := range names {
			if other == req.name {
				continue
			}
			for num := 0; num <= corosyncconf.MaxLink; num++ {
				if addr, ok := nodes[other].Links[num]; ok && addr == l.Address {
					return nil, fmt.Errorf("corosync: address '%s' already used on link ring%d_addr by node '%s'", l.Address, num, other)
				}
			}
		}
	}
	clusterLinks := nodes[names[0]].Links
	newNodeIP := req.newNodeIP
	legacy := false
	if newNodeIP == "" && len(links) == 1 && req.apiVer == 0 {
		for num, l := range links {
			newNodeIP = l.Address
			delete(links, num)
		}
		legacy = true
	}
	if len(links) > 0 {
		for num := 0; num <= corosyncconf.MaxLink; num++ {
			_, inCluster := clusterLinks[num]
			_, inNew := links[num]
			if inCluster && !inNew {
				return nil, fmt.Errorf("corosync: link %d exists in cluster config but wasn't specified for new node", num)
			}
			if !inCluster && inNew {
				return nil, fmt.Errorf("corosync: link %d specified for new node doesn't exist in cluster config", num)
			}
		}
	} else {
		if newNodeIP == "" {
			return nil, errors.New("no links and no fallback ip (new_node_ip) given, cannot join cluster")
		}
		if len(clusterLinks) != 1 {
			if legacy {
				return nil, fmt.Errorf("cluster has %d links, but only 1 given", len(clusterLinks))
			}
			return nil, errors.New("no links given but multiple links found on other nodes, fallback only supported on single-link clusters")
		}
		for num := range clusterLinks {
			links[num] = corosyncconf.Link{Address: newNodeIP}
		}
		// The fallback address must not be in use either.
		for _, other := range names {
			for num, addr := range nodes[other].Links {
				if other != req.name && addr == newNodeIP {
					return nil, fmt.Errorf("corosync: address '%s' already used on link ring%d_addr by node '%s'", newNodeIP, num, other)
				}
			}
		}
	}

	nodeID, votes := req.nodeID, req.votes
	if old, ok := nodes[req.name]; ok {
		if nodeID == 0 {
			nodeID = old.ID
		}
		if votes < 0 {
			votes = old.Votes
		}
		if !(old.Votes == votes && old.ID == nodeID && req.force) {
			return nil, fmt.Errorf("can't add existing node '%s'", req.name)
		}
		msgs = append(msgs, fmt.Sprintf("forcing overwrite of configured node '%s'", req.name))
	} else if nodeID == 0 {
		used := map[int]bool{}
		for _, n := range nodes {
			used[n.ID] = true
		}
		for nodeID = 1; used[nodeID]; nodeID++ {
		}
	} else {
		for _, other := range names {
			if nodes[other].ID == nodeID {
				return nil, fmt.Errorf("node id %d is already used by node '%s'", nodeID, other)
			}
		}
	}
	if votes < 0 {
		votes = 1
	}
	n := &corosyncconf.Node{Name: req.name, ID: nodeID, Votes: votes, Links: map[int]string{}, Extras: map[string]string{}}
	if votes == 0 {
		n.Votes = -1 // as upstream: no quorum_votes line for a node without votes
	}
	for num, l := range links {
		n.Links[num] = l.Address
	}
	nodes[req.name] = n
	cfg.SetNodes(nodes)
	return msgs, nil
}

func cmdDelNode(h *host, pos []string, _ options) error {
	target := pos[0]
	self, err := nodeName()
	if err != nil {
		return err
	}
	if target == self {
		return errors.New("Cannot delete myself from cluster!")
	}
	return h.changeConf(func(cfg *corosyncconf.Config) error {
		name, nodeID, err := delNode(cfg, target)
		if err != nil {
			return err
		}
		clusterLog("deleting node " + name + " from cluster")
		if nodeID > 0 {
			// Fails harmlessly when the node is already down.
			runQuiet("corosync-cfgtool", "-k", strconv.Itoa(nodeID))
		}
		return nil
	})
}

// delNode removes the node named target (or whose ring0/ring1 address is target) from cfg.
func delNode(cfg *corosyncconf.Config, target string) (name string, nodeID int, err error) {
	nodes, err := cfg.Nodes()
	if err != nil {
		return "", 0, err
	}
	for n, node := range nodes {
		if n == target || node.Links[0] == target || node.Links[1] == target {
			delete(nodes, n)
			cfg.SetNodes(nodes)
			return n, node.ID, nil
		}
	}
	return "", 0, fmt.Errorf("Node/IP: %s is not a known host of the cluster.", target)
}
