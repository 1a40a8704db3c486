package corosyncconf

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Section is one `name { ... }` block of a corosync.conf. Keys are unique within a section,
// whatever their kind, as in the Perl parser pvecm uses; `node` and `interface` are the two
// sections that may repeat and are kept as lists.
type Section struct {
	Values   map[string]string
	Sections map[string]*Section
	Lists    map[string][]*Section
}

// Config is a parsed corosync.conf: the unnamed top-level section.
type Config struct{ Main *Section }

// repeatedSections may appear several times in one parent.
var repeatedSections = map[string]bool{"node": true, "interface": true}

func newSection() *Section {
	return &Section{Values: map[string]string{}, Sections: map[string]*Section{}, Lists: map[string][]*Section{}}
}

func (s *Section) has(key string) bool {
	_, v := s.Values[key]
	_, sec := s.Sections[key]
	_, list := s.Lists[key]
	return v || sec || list
}

// Section returns the named subsection, creating it when missing.
func (s *Section) Section(name string) *Section {
	if sub := s.Sections[name]; sub != nil {
		return sub
	}
	sub := newSection()
	s.Sections[name] = sub
	return sub
}

// Parse reads a corosync.conf the way pvecm does: comments dropped, tokens split on white
// space, `key: value` pairs and `name {` ... `}` blocks. Values cannot contain spaces.
func Parse(data []byte) (*Config, error) {
	var tokens []string
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		tokens = append(tokens, strings.Fields(line)...)
	}
	cfg := &Config{Main: newSection()}
	cur, stack := cfg.Main, []*Section(nil)
	for i := 0; i < len(tokens); i++ {
		tok := tokens[i]
		switch {
		case i+1 < len(tokens) && tokens[i+1] == "{":
			i++
			sub := newSection()
			switch {
			case repeatedSections[tok]:
				cur.Lists[tok] = append(cur.Lists[tok], sub)
			case !cur.has(tok):
				cur.Sections[tok] = sub
			default:
				return nil, fmt.Errorf("section '%s' already exists and not marked as array", tok)
			}
			stack = append(stack, cur)
			cur = sub
		case tok == "}":
			if len(stack) == 0 {
				return nil, errors.New("parse error - unexpected '}'")
			}
			cur, stack = stack[len(stack)-1], stack[:len(stack)-1]
		default:
			key, ok := strings.CutSuffix(tok, ":")
			if !ok {
				return nil, fmt.Errorf("missing ':' after key '%s'", tok)
			}
			if i+1 >= len(tokens) {
				return nil, fmt.Errorf("parse error - no value for '%s'", key)
			}
			i++
			cur.Values[key] = tokens[i]
		}
	}
	if len(stack) != 0 {
		return nil, errors.New("parse error - missing '}'")
	}
	return cfg, nil
}

// Format renders the configuration as pvecm writes it: keys sorted, two spaces of indent per
// level, a blank line after each top-level block, nodes ordered by name and interfaces by link
// number (both compared as strings).
func (c *Config) Format() string {
	var b strings.Builder
	formatSection(&b, c.Main, "")
	return b.String()
}

func formatSection(b *strings.Builder, s *Section, indent string) {
	keys := make([]string, 0, len(s.Values)+len(s.Sections)+len(s.Lists))
	for k := range s.Values {
		keys = append(keys, k)
	}
	for k := range s.Sections {
		keys = append(keys, k)
	}
	for k := range s.Lists {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch {
		case s.Sections[k] != nil:
			fmt.Fprintf(b, "%s%s {\n", indent, k)
			formatSection(b, s.Sections[k], indent+"  ")
			fmt.Fprintf(b, "%s}\n", indent)
			if indent == "" {
				b.WriteString("\n")
			}
		case s.Lists[k] != nil:
			for _, item := range sortedList(k, s.Lists[k]) {
				fmt.Fprintf(b, "%s%s {\n", indent, k)
				formatSection(b, item, indent+"  ")
				fmt.Fprintf(b, "%s}\n", indent)
			}
		default:
			fmt.Fprintf(b, "%s%s: %s\n", indent, k, s.Values[k])
		}
	}
}

// sortedList orders repeated sections by the key pvecm files them under.
func sortedList(kind string, items []*Section) []*Section {
	out := append([]*Section(nil), items...)
	sort.SliceStable(out, func(i, j int) bool { return listKey(kind, out[i]) < listKey(kind, out[j]) })
	return out
}

func listKey(kind string, s *Section) string {
	if kind == "interface" {
		if v, ok := s.Values["linknumber"]; ok {
			return v
		}
		return s.Values["ringnumber"]
	}
	if v, ok := s.Values["name"]; ok {
		return v
	}
	return s.Values["ring0_addr"]
}

// Node is one nodelist entry.
type Node struct {
	Name   string
	ID     int
	Votes  int            // -1: no quorum_votes key (corosync counts 1)
	Links  map[int]string // link number -> ringN_addr
	Extras map[string]string
}

// MaxLink is the highest corosync (knet) link number.
const MaxLink = 7

// Nodes returns the nodelist by node name (or ring0_addr for nodes without a name).
func (c *Config) Nodes() (map[string]*Node, error) {
	out := map[string]*Node{}
	nodelist := c.Main.Sections["nodelist"]
	if nodelist == nil {
		return out, nil
	}
	for _, s := range nodelist.Lists["node"] {
		n := &Node{Name: listKey("node", s), Votes: -1, Links: map[int]string{}, Extras: map[string]string{}}
		for k, v := range s.Values {
			switch {
			case k == "name":
			case k == "nodeid":
				id, err := strconv.Atoi(v)
				if err != nil {
					return nil, fmt.Errorf("node '%s': invalid nodeid '%s'", n.Name, v)
				}
				n.ID = id
			case k == "quorum_votes":
				votes, err := strconv.Atoi(v)
				if err != nil {
					return nil, fmt.Errorf("node '%s': invalid quorum_votes '%s'", n.Name, v)
				}
				n.Votes = votes
			case linkKey(k) >= 0:
				n.Links[linkKey(k)] = v
			default:
				n.Extras[k] = v
			}
		}
		if n.Name == "" {
			return nil, errors.New("nodelist entry without name and ring0_addr")
		}
		out[n.Name] = n
	}
	return out, nil
}

// linkKey returns N for a "ringN_addr" key, -1 for anything else.
func linkKey(k string) int {
	num, ok := strings.CutPrefix(k, "ring")
	if !ok {
		return -1
	}
	num, ok = strings.CutSuffix(num, "_addr")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || n < 0 || n > MaxLink {
		return -1
	}
	return n
}

// SetNodes replaces the nodelist.
func (c *Config) SetNodes(nodes map[string]*Node) {
	list := make([]*Section, 0, len(nodes))
	for _, n := range nodes {
		s := newSection()
		for k, v := range n.Extras {
			s.Values[k] = v
		}
		s.Values["name"] = n.Name
		if n.ID > 0 {
			s.Values["nodeid"] = strconv.Itoa(n.ID)
		}
		if n.Votes >= 0 {
			s.Values["quorum_votes"] = strconv.Itoa(n.Votes)
		}
		for link, addr := range n.Links {
			s.Values[fmt.Sprintf("ring%d_addr", link)] = addr
		}
		list = append(list, s)
	}
	c.Main.Section("nodelist").Lists["node"] = list
}

// Totem returns the totem section (empty when the file has none).
func (c *Config) Totem() *Section {
	if t := c.Main.Sections["totem"]; t != nil {
		return t
	}
	return newSection()
}

// BumpVersion raises totem.config_version by one, as every pvecm change does so that each
// node's pmxcfs writes the new file to /etc/corosync.
func (c *Config) BumpVersion() error {
	t := c.Main.Sections["totem"]
	if t == nil {
		return errors.New("invalid corosync config: unable to read config version")
	}
	v, ok := t.Values["config_version"]
	n, err := strconv.ParseUint(v, 10, 64)
	if !ok || err != nil {
		return errors.New("invalid corosync config: unable to read config version")
	}
	t.Values["config_version"] = strconv.FormatUint(n+1, 10)
	return nil
}

// Link is one corosync link of a node: its address and an optional knet priority.
type Link struct {
	Address  string
	Priority int
}

// NewClusterConfig builds the configuration of a new one-node cluster, with the settings
// `pvecm create` uses (knet, secauth, votequorum, config_version 0 so the first write makes
// it 1).
func NewClusterConfig(clusterName, nodeName string, nodeID, votes int, links map[int]Link, tokenCoefficient *int) *Config {
	cfg := &Config{Main: newSection()}
	totem := cfg.Main.Section("totem")
	for k, v := range map[string]string{
		"version": "2", "secauth": "on", "cluster_name": clusterName, "config_version": "0",
		"ip_version": "ipv4-6", "link_mode": "passive",
	} {
		totem.Values[k] = v
	}
	if tokenCoefficient != nil {
		totem.Values["token_coefficient"] = strconv.Itoa(*tokenCoefficient)
	}
	node := &Node{Name: nodeName, ID: nodeID, Votes: votes, Links: map[int]string{}, Extras: map[string]string{}}
	for num, l := range links {
		iface := newSection()
		iface.Values["linknumber"] = strconv.Itoa(num)
		if l.Priority != 0 {
			iface.Values["knet_link_priority"] = strconv.Itoa(l.Priority)
		}
		totem.Lists["interface"] = append(totem.Lists["interface"], iface)
		node.Links[num] = l.Address
	}
	cfg.SetNodes(map[string]*Node{nodeName: node})
	cfg.Main.Section("quorum").Values["provider"] = "corosync_votequorum"
	logging := cfg.Main.Section("logging")
	logging.Values["to_syslog"] = "yes"
	logging.Values["debug"] = "off"
	return cfg
}
