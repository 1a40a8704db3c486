package memdb

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
)

// entry is one node of the in-RAM tree. Published file data is never modified in
// place (a write installs a new slice), so readers may keep a reference after unlocking.
type entry struct {
	inode, parent, version uint64
	writer, mtime          uint32
	typ                    uint8
	name                   string
	data                   []byte            // regular files
	children               map[string]*entry // directories
	digest                 [32]byte          // the index digest, kept current by setDigest
}

func (e *entry) size() uint32 { return uint32(len(e.data)) }

func (e *entry) public() Entry {
	return Entry{Inode: e.inode, Parent: e.parent, Version: e.version, Writer: e.writer,
		Mtime: e.mtime, Size: e.size(), Type: e.typ, Name: e.name}
}

// fieldImage is the little-endian byte image upstream hashes for an entry
// (memdb.c:memdb_encode_index, docs/protocol.md#checksums), without the inode and the data.
func (e *entry) fieldImage(buf []byte) []byte {
	buf = binary.LittleEndian.AppendUint64(buf, e.version)
	buf = binary.LittleEndian.AppendUint32(buf, e.writer)
	buf = binary.LittleEndian.AppendUint32(buf, e.mtime)
	buf = binary.LittleEndian.AppendUint32(buf, e.size())
	buf = append(buf, e.typ)
	buf = binary.LittleEndian.AppendUint64(buf, e.parent)
	return append(buf, e.name...)
}

func (e *entry) hashedData() []byte {
	if e.typ == TypeReg {
		return e.data
	}
	return nil
}

func (e *entry) setDigest() {
	h := sha256.New()
	h.Write(e.fieldImage(make([]byte, 0, 64+len(e.name))))
	h.Write(e.hashedData())
	h.Sum(e.digest[:0])
}

// lockChecksum is memdb.c:memdb_tree_entry_csum: the inode followed by the digest fields.
func (e *entry) lockChecksum() [32]byte {
	var sum [32]byte
	h := sha256.New()
	buf := binary.LittleEndian.AppendUint64(make([]byte, 0, 72+len(e.name)), e.inode)
	h.Write(e.fieldImage(buf))
	h.Write(e.hashedData())
	h.Sum(sum[:0])
	return sum
}

// tree is the whole in-RAM database: the root plus an index of every entry by inode.
type tree struct {
	root    *entry
	byInode map[uint64]*entry
}

func newTree() *tree {
	root := &entry{typ: TypeDir, children: map[string]*entry{}}
	return &tree{root: root, byInode: map[uint64]*entry{0: root}}
}

// row is one record of the SQLite tree table, or of a DCDB update.
type row struct {
	inode, parent, version uint64
	writer, mtime          uint32
	typ                    uint8
	name                   string
	data                   []byte
}

const versionRowName = "__version__"

// buildTree turns rows in any order into a tree, applying upstream's corruption rules
// (database.c:bdb_backend_load_index, docs/upstream-behaviour.md#corrupt-database) plus the
// ones needed so that a tree never loops or reuses an inode.
func buildTree(rows []row) (*tree, error) {
	t := newTree()
	// Parents seen before their own row get a placeholder (typ 0), as upstream does.
	for _, r := range rows {
		if r.name == "" {
			return nil, fmt.Errorf("inode %d has no name", r.inode)
		}
		switch r.typ {
		case TypeReg:
		case TypeDir:
			if len(r.data) > 0 {
				return nil, fmt.Errorf("directory inode %d (%q) contains data", r.inode, r.name)
			}
		default:
			return nil, fmt.Errorf("inode %d (%q) has unknown type %d", r.inode, r.name, r.typ)
		}
		if r.inode == 0 {
			if r.name != versionRowName {
				return nil, fmt.Errorf("root inode has unexpected name %q", r.name)
			}
			t.root.version, t.root.writer, t.root.mtime = r.version, r.writer, r.mtime
			continue
		}
		if r.parent == r.inode {
			return nil, fmt.Errorf("inode %d (%q) is its own parent", r.inode, r.name)
		}
		p := t.byInode[r.parent]
		if p == nil {
			p = &entry{inode: r.parent, children: map[string]*entry{}}
			t.byInode[r.parent] = p
		} else if p.typ != TypeDir && p.typ != 0 {
			return nil, fmt.Errorf("parent %d of inode %d (%q) is not a directory", r.parent, r.inode, r.name)
		}
		e := &entry{inode: r.inode, parent: r.parent, version: r.version, writer: r.writer,
			mtime: r.mtime, typ: r.typ, name: r.name}
		old := t.byInode[r.inode]
		if old != nil && old.typ != 0 {
			return nil, fmt.Errorf("inode %d appears twice", r.inode)
		}
		if old != nil && e.typ != TypeDir {
			return nil, fmt.Errorf("inode %d (%q) is the parent of other entries but not a directory", r.inode, r.name)
		}
		if e.typ == TypeDir {
			e.children = map[string]*entry{}
			if old != nil {
				e.children = old.children
			}
		} else if len(r.data) > 0 {
			e.data = r.data
		}
		if dup := p.children[e.name]; dup != nil {
			return nil, fmt.Errorf("duplicate name %q in directory %d: inode %d (version %d, mtime %d) and inode %d (version %d, mtime %d)",
				e.name, r.parent, dup.inode, dup.version, dup.mtime, e.inode, e.version, e.mtime)
		}
		p.children[e.name] = e
		t.byInode[e.inode] = e
	}
	var maxInode uint64
	for ino, e := range t.byInode {
		if e.typ == 0 {
			return nil, fmt.Errorf("missing directory inode %d", ino)
		}
		maxInode = max(maxInode, ino)
	}
	// New inodes are taken from the version counter, so a counter below an existing
	// inode would later overwrite that entry.
	if t.root.version != 0 && t.root.version < maxInode {
		return nil, fmt.Errorf("root version %d is lower than inode %d", t.root.version, maxInode)
	}
	// Parent links may form a loop detached from the root; upstream would keep such
	// entries unreachable forever, we refuse them.
	reachable := 0
	var walk func(*entry)
	walk = func(d *entry) {
		reachable++
		for _, c := range d.children {
			walk(c)
		}
	}
	walk(t.root)
	if reachable != len(t.byInode) {
		return nil, fmt.Errorf("%d entries are not reachable from the root (parent loop)", len(t.byInode)-reachable)
	}
	for _, e := range t.byInode {
		e.setDigest()
	}
	return t, nil
}

// splitPath mirrors upstream's split_path: trailing slashes stripped, then glib's
// dirname and basename.
func splitPath(p string) (dir, base string) {
	p = strings.TrimRight(p, "/")
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		dir = "."
	} else {
		j := i
		for j > 0 && p[j] == '/' {
			j--
		}
		dir = p[:j+1]
	}
	if p == "" {
		base = "."
	} else {
		base = p[i+1:]
	}
	return dir, base
}

func badName(base string) bool { return base == "" || base == "." || base == ".." }

// lookup mirrors memdb_lookup_path: empty components are skipped and ".." is an
// ordinary name. parent is nil for the root.
func (t *tree) lookup(p string) (e, parent *entry) {
	if p == "" || p == "." || p == "/" {
		return t.root, nil
	}
	cur := t.root
	for _, name := range strings.Split(p, "/") {
		if name == "" {
			continue
		}
		parent = cur
		if cur.typ != TypeDir {
			return nil, parent
		}
		if cur = cur.children[name]; cur == nil {
			return nil, parent
		}
	}
	return cur, parent
}

// canonical joins the non-empty components of p; it keys the lock table.
func canonical(p string) string {
	parts := strings.FieldsFunc(p, func(r rune) bool { return r == '/' })
	return strings.Join(parts, "/")
}

func (t *tree) sortedEntries() []*entry {
	list := make([]*entry, 0, len(t.byInode))
	for _, e := range t.byInode {
		list = append(list, e)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].inode < list[j].inode })
	return list
}

// encodeIndex builds the index (docs/protocol.md#memdb-index) from the cached digests.
func (t *tree) encodeIndex() []byte {
	list := t.sortedEntries()
	buf := make([]byte, 32, 32+40*len(list))
	binary.LittleEndian.PutUint64(buf[0:], t.root.version)
	if len(list) > 0 {
		binary.LittleEndian.PutUint64(buf[8:], list[len(list)-1].inode)
	}
	binary.LittleEndian.PutUint32(buf[16:], t.root.writer)
	binary.LittleEndian.PutUint32(buf[20:], t.root.mtime)
	binary.LittleEndian.PutUint32(buf[24:], uint32(len(list)))
	binary.LittleEndian.PutUint32(buf[28:], uint32(32+40*len(list)))
	for _, e := range list {
		buf = binary.LittleEndian.AppendUint64(buf, e.inode)
		buf = append(buf, e.digest[:]...)
	}
	return buf
}
