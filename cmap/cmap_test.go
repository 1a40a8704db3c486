package cmap

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/internal/corotest"
	"github.com/pmxcfs-go/pmxcfs/internal/cs"
)

func TestMain(m *testing.M) { os.Exit(corotest.Main(m)) }

// Expected results are glibc's sscanf("nodelist.node.%d.%s") on the same
// keys (the upstream parser), recorded from a C run.
func TestParseNodeKeyMatchesSscanf(t *testing.T) {
	for _, c := range []struct {
		key string
		idx int
		sub string
		ok  bool
	}{
		{"nodelist.node.0.name", 0, "name", true},
		{"nodelist.node.12.ring0_addr", 12, "ring0_addr", true},
		{"nodelist.node.0", 0, "", false},
		{"nodelist.node.x.name", 0, "", false},
		{"nodelist.node.1a.name", 0, "", false},
		{"nodelist.node. 3.nodeid", 3, "nodeid", true},
		{"nodelist.node.-1.name", -1, "name", true},
		{"nodelist.node.+4.name", 4, "name", true},
		{"nodelist.node.5.", 0, "", false},
		{"nodelist.node.6. name", 6, "name", true},
		{"nodelist.node.7.a b", 7, "a", true},
		{"nodelist.node.007.nodeid", 7, "nodeid", true},
		{"nodelist.nodes.1.name", 0, "", false},
	} {
		idx, sub, ok := parseNodeKey(c.key)
		if ok != c.ok || (ok && (idx != c.idx || sub != c.sub)) {
			t.Errorf("%q: got %d %q %v, want %d %q %v", c.key, idx, sub, ok, c.idx, c.sub, c.ok)
		}
	}
}

func open(t *testing.T) *Handle {
	t.Helper()
	h, err := Initialize()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestReadsAndTypes(t *testing.T) {
	corotest.Start(t, corotest.DefaultConfig())
	h := open(t)

	c, err := h.ReadCluster()
	if err != nil {
		t.Fatal(err)
	}
	want := &Cluster{Name: "corotest", Version: 1, Nodes: []Node{
		{ID: 1, Name: "alpha", Votes: 2},     // name preferred over ring0_addr
		{ID: 2, Name: "127.0.0.2", Votes: 1}, // no name: ring0_addr
	}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("ReadCluster = %+v, want %+v", c, want)
	}

	if _, err := h.GetUint32(KeyConfigVersion); !errors.Is(err, cs.ErrInvalidParam) ||
		!strings.Contains(err.Error(), "totem.config_version is u64, not u32") {
		t.Errorf("GetUint32 of a u64: %v", err)
	}
	if _, err := h.GetString("totem.no_such_key"); !errors.Is(err, cs.ErrNotExist) {
		t.Errorf("missing key: %v", err)
	} else {
		t.Log(err)
	}

	// Keys and types agree with corosync-cmapctl, which prints
	// "key (type) = value".
	keys, err := h.Keys(PrefixNodelist)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("corosync-cmapctl", PrefixNodelist).Output()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range keys {
		v, err := h.Get(k.Name)
		if err != nil {
			t.Fatal(err)
		}
		var val string
		switch k.Type {
		case TypeUint32:
			x, _ := v.Uint32()
			val = strconv.FormatUint(uint64(x), 10)
		case TypeString:
			val, _ = v.String()
		}
		got = append(got, k.Name+" ("+k.Type.String()+") = "+val)
	}
	if strings.Join(got, "\n")+"\n" != string(out) {
		t.Errorf("Keys:\n%s\ncorosync-cmapctl:\n%s", strings.Join(got, "\n"), out)
	}
}

type changes struct {
	mu   sync.Mutex
	list []Change
	ch   chan struct{}
}

func (c *changes) add(x Change) {
	c.mu.Lock()
	c.list = append(c.list, x)
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

func (c *changes) find(t *testing.T, what string, match func(Change) bool) Change {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		for _, x := range c.list {
			if match(x) {
				c.mu.Unlock()
				return x
			}
		}
		c.mu.Unlock()
		select {
		case <-c.ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; got %+v", what, c.list)
		}
	}
}

func TestTrackReload(t *testing.T) {
	cfg := corotest.DefaultConfig()
	co := corotest.Start(t, cfg)
	h := open(t)
	nodes, version := &changes{ch: make(chan struct{}, 1)}, &changes{ch: make(chan struct{}, 1)}
	if _, err := h.Track(PrefixNodelist, TrackPrefix|TrackAll, nodes.add); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Track(KeyConfigVersion, TrackAll, version.add); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(context.Background()) }()

	cfg.Version = 2
	cfg.Nodes = append(cfg.Nodes, corotest.Node{ID: 3, Name: "gamma", Votes: 1, Addr: "127.0.0.3"})
	if err := corotest.WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if err := co.Reload(); err != nil {
		t.Fatal(err)
	}
	v := version.find(t, "config_version change", func(c Change) bool { return c.Event == EventModify })
	n, _ := v.New.Uint64()
	o, _ := v.Old.Uint64()
	if v.Key != KeyConfigVersion || n != 2 || o != 1 {
		t.Fatalf("version change %+v", v)
	}
	add := nodes.find(t, "new node", func(c Change) bool { return c.Key == "nodelist.node.2.name" })
	if s, _ := add.New.String(); add.Event != EventAdd || s != "gamma" {
		t.Fatalf("node change %+v", add)
	}
	c, err := h.ReadCluster()
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != 2 || len(c.Nodes) != 3 || c.Nodes[2] != (Node{ID: 3, Name: "gamma", Votes: 1}) {
		t.Fatalf("after reload: %+v", c)
	}

	h.Close()
	h.Close()
	if err := <-done; err != nil {
		t.Fatalf("Run after Close: %v", err)
	}
	if _, err := h.GetString(KeyClusterName); !errors.Is(err, cs.ErrBadHandle) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestCorosyncDiesAndComesBack(t *testing.T) {
	co := corotest.Start(t, corotest.DefaultConfig())
	h := open(t)
	if _, err := h.Track(KeyConfigVersion, TrackAll, func(Change) {}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(context.Background()) }()
	co.Kill()
	select {
	case err := <-done:
		if !errors.Is(err, cs.ErrLibrary) {
			t.Fatalf("Run = %v, want CS_ERR_LIBRARY", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not notice corosync dying")
	}
	if _, err := h.GetString(KeyClusterName); !errors.Is(err, cs.ErrLibrary) {
		t.Fatalf("GetString after kill: %v", err)
	} else {
		t.Log(err)
	}
	if _, err := Initialize(); !errors.Is(err, cs.ErrLibrary) {
		t.Fatalf("Initialize without corosync: %v", err)
	}
	co.Restart()
	h2 := open(t)
	if name, err := h2.GetString(KeyClusterName); err != nil || name != "corotest" {
		t.Fatalf("after restart: %q, %v", name, err)
	}
}
