package corosyncconf

import (
	"strings"
	"testing"
)

// The layout of a corosync.conf written by `pvecm create` on a Proxmox VE node after its
// first atomic write (config_version raised from 0 to 1).
const createdByPvecm = `logging {
  debug: off
  to_syslog: yes
}

nodelist {
  node {
    name: pve1
    nodeid: 1
    quorum_votes: 1
    ring0_addr: 10.0.0.1
  }
}

quorum {
  provider: corosync_votequorum
}

totem {
  cluster_name: test
  config_version: 1
  interface {
    linknumber: 0
  }
  ip_version: ipv4-6
  link_mode: passive
  secauth: on
  token_coefficient: 125
  version: 2
}

`

func TestNewClusterConfigLayout(t *testing.T) {
	coeff := 125
	cfg := NewClusterConfig("test", "pve1", 1, 1, map[int]Link{0: {Address: "10.0.0.1"}}, &coeff)
	if err := cfg.BumpVersion(); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Format(); got != createdByPvecm {
		t.Errorf("got:\n%s\nwant:\n%s", got, createdByPvecm)
	}
	if ConfigVersion([]byte(cfg.Format())) != 1 {
		t.Error("config_version not 1")
	}
}

func TestParseFormatRoundTrip(t *testing.T) {
	// Hand-edited input: comments, odd spacing, a node without quorum_votes, several links.
	in := `# managed by hand
totem {
	version: 2
	cluster_name: lab   # trailing comment
	config_version: 41
	interface { linknumber: 1
	  knet_link_priority: 5 }
	interface {
		linknumber: 0
	}
}
nodelist {
	node {
		ring0_addr: 192.0.2.12
		ring1_addr: 198.51.100.12
		name: b
		nodeid: 2
	}
	node {
		name: a
		nodeid: 1
		quorum_votes: 1
		ring0_addr: 192.0.2.11
		ring1_addr: 198.51.100.11
	}
}
quorum {
	provider: corosync_votequorum
	two_node: 1
}
`
	cfg, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := `nodelist {
  node {
    name: a
    nodeid: 1
    quorum_votes: 1
    ring0_addr: 192.0.2.11
    ring1_addr: 198.51.100.11
  }
  node {
    name: b
    nodeid: 2
    ring0_addr: 192.0.2.12
    ring1_addr: 198.51.100.12
  }
}

quorum {
  provider: corosync_votequorum
  two_node: 1
}

totem {
  cluster_name: lab
  config_version: 41
  interface {
    linknumber: 0
  }
  interface {
    knet_link_priority: 5
    linknumber: 1
  }
  version: 2
}

`
	if got := cfg.Format(); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	nodes, err := cfg.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes["a"].ID != 1 || nodes["b"].Votes != -1 || nodes["b"].Links[1] != "198.51.100.12" {
		t.Fatalf("nodes = %+v %+v", nodes["a"], nodes["b"])
	}
	// Rewriting the unchanged node list must not change the file.
	cfg.SetNodes(nodes)
	if got := cfg.Format(); got != want {
		t.Fatalf("after SetNodes:\n%s", got)
	}
	if err := cfg.BumpVersion(); err != nil || !strings.Contains(cfg.Format(), "config_version: 42\n") {
		t.Fatalf("BumpVersion: %v\n%s", err, cfg.Format())
	}
}

func TestParseErrors(t *testing.T) {
	for in, want := range map[string]string{
		"totem {\n version 2\n}\n": "missing ':' after key 'version'",
		"totem {\n}\n}\n":          "unexpected '}'",
		"totem {\n version: 2\n":   "missing '}'",
		"totem {\n}\ntotem {\n}\n": "section 'totem' already exists",
	} {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want %q", in, err, want)
		}
	}
	// "cluster_name:" followed by "}" takes "}" as its value, as upstream's tokenizer does,
	// and then misses the closing brace.
	if _, err := Parse([]byte("totem {\n cluster_name:\n}\n")); err == nil {
		t.Error("dangling key accepted")
	}
	cfg, _ := Parse([]byte("nodelist {\n node {\n nodeid: 1\n}\n}"))
	if _, err := cfg.Nodes(); err == nil {
		t.Error("node without name and ring0_addr accepted")
	}
	if err := (&Config{Main: newSection()}).BumpVersion(); err == nil {
		t.Error("BumpVersion without totem succeeded")
	}
}
