package clusterlog

import "encoding/binary"

// ring is the whole clog_base as bytes: size u32, cpos u32 (offset of the newest entry,
// 0 = empty), then entries at 8-aligned offsets, each linked to the older one by prev.
// Keeping the exact bytes makes the KVSTORE state identical to upstream's.
type ring []byte

func newRing(size int) ring {
	r := make(ring, size)
	binary.LittleEndian.PutUint32(r[0:], uint32(size))
	return r
}

func (r ring) sizeField() uint32 { return binary.LittleEndian.Uint32(r[0:]) }
func (r ring) cpos() uint32      { return binary.LittleEndian.Uint32(r[4:]) }
func (r ring) setCpos(p uint32)  { binary.LittleEndian.PutUint32(r[4:], p) }

// view is one entry found in a ring (or a standalone entry buffer).
type view struct {
	b []byte // the entry's bytes, header.size() long
	h header
}

// entryAt returns the entry at pos if it lies wholly inside the ring and has a size
// upstream would copy (48 < size <= 4096). Upstream trusts peers' rings; we stop a walk at
// anything else instead of reading out of bounds.
func (r ring) entryAt(pos uint32) (view, bool) {
	if pos < ringHeaderSize || uint64(pos)+entryStructSize > uint64(len(r)) {
		return view{}, false
	}
	h := readHeader(r[pos:])
	size := h.size()
	if size <= entryStructSize || size > MaxEntrySize || uint64(pos)+size > uint64(len(r)) {
		return view{}, false
	}
	return view{b: r[pos : uint64(pos)+size], h: h}, true
}

// maxSteps bounds a walk: a sane ring cannot hold more entries than this, so a longer walk
// means a crafted prev cycle (which would loop upstream forever).
func (r ring) maxSteps() int { return len(r)/entryStructSize + 1 }

// inWindow is upstream's walk condition: positions up to cpos, or beyond the space the
// newest entry may occupy, are still intact.
func (r ring) inWindow(pos uint32) bool {
	c := uint64(r.cpos())
	return uint64(pos) <= c || uint64(pos) > c+MaxEntrySize
}

// wrapsIntoNew reports upstream's stop rule: following prev from pos would jump forward
// into space already overwritten by newer entries.
func (r ring) wrapsIntoNew(pos uint32, v view) bool {
	return pos < v.h.prev && v.h.prev <= r.cpos()
}

// alloc reserves room for an entry of size bytes like clog_alloc_entry: after the newest
// entry, or back at offset 8 when it would not fit before the end. It links the new slot
// and returns its offset.
func (r ring) alloc(size int) uint32 {
	realsize := uint32(size+7) &^ 7
	newpos := uint32(ringHeaderSize)
	if c := r.cpos(); c != 0 {
		newpos = binary.LittleEndian.Uint32(r[c+4:])
		if uint64(newpos)+uint64(realsize) >= uint64(r.sizeField()) || uint64(newpos)+uint64(realsize) > uint64(len(r)) {
			newpos = ringHeaderSize
		}
	}
	binary.LittleEndian.PutUint32(r[newpos:], r.cpos())
	binary.LittleEndian.PutUint32(r[newpos+4:], newpos+realsize)
	r.setCpos(newpos)
	return newpos
}

// copyEntry appends the entry bytes e (prev/next ignored) as the newest entry.
func (r ring) copyEntry(e []byte) {
	pos := r.alloc(len(e))
	copy(r[pos+8:pos+uint32(len(e))], e[8:])
}

// sortedTree collects the ring's entries the way clog_sort does (newest first, each
// entry used before the wrap check) into a tree ordered like upstream.
func (r ring) sortedTree() *tree {
	t := &tree{}
	pos := r.cpos()
	for steps := 0; pos != 0 && r.inWindow(pos) && steps < r.maxSteps(); steps++ {
		v, ok := r.entryAt(pos)
		if !ok {
			break
		}
		t.insert(v)
		if r.wrapsIntoNew(pos, v) {
			break
		}
		pos = v.h.prev
	}
	return t
}

// sorted returns a new ring of the same size holding the entries in upstream's order
// (oldest first, so the newest ends at cpos), like clog_sort.
func (r ring) sorted() ring {
	res := newRing(len(r))
	r.sortedTree().each(func(v view) { res.copyEntry(v.b) })
	return res
}

// compareEntries is upstream's clog_entry_sort_fn, including its C integer conversions:
// the time and uid differences are taken as int32 and the node-digest difference is
// truncated to its low 32 bits. That order is not always transitive, which is why the
// tree below mirrors GLib's AVL tree rather than using a sort.
func compareEntries(a, b header) int32 {
	if a.time != b.time {
		return int32(a.time - b.time)
	}
	if a.nodeDigest != b.nodeDigest {
		return int32(uint32(a.nodeDigest - b.nodeDigest))
	}
	return int32(a.uid - b.uid)
}

// tree is an AVL tree with GLib GTree's insert/lookup semantics: compare(new, node),
// equal keys keep the node but take the new value, standard AVL rebalancing. With the
// same insertion sequence it yields the same in-order sequence as upstream.
type tree struct{ root *node }

type node struct {
	v           view
	left, right *node
	height      int
}

func height(n *node) int {
	if n == nil {
		return 0
	}
	return n.height
}

func (n *node) fix() {
	n.height = max(height(n.left), height(n.right)) + 1
}

func rotateRight(n *node) *node {
	l := n.left
	n.left = l.right
	l.right = n
	n.fix()
	l.fix()
	return l
}

func rotateLeft(n *node) *node {
	r := n.right
	n.right = r.left
	r.left = n
	n.fix()
	r.fix()
	return r
}

func (t *tree) insert(v view) { t.root = insertNode(t.root, v) }

func insertNode(n *node, v view) *node {
	if n == nil {
		return &node{v: v, height: 1}
	}
	c := compareEntries(v.h, n.v.h)
	switch {
	case c == 0:
		n.v = v
		return n
	case c < 0:
		n.left = insertNode(n.left, v)
	default:
		n.right = insertNode(n.right, v)
	}
	n.fix()
	switch bal := height(n.right) - height(n.left); {
	case bal < -1:
		if height(n.left.right) > height(n.left.left) {
			n.left = rotateLeft(n.left)
		}
		return rotateRight(n)
	case bal > 1:
		if height(n.right.left) > height(n.right.right) {
			n.right = rotateRight(n.right)
		}
		return rotateLeft(n)
	}
	return n
}

func (t *tree) contains(h header) bool {
	n := t.root
	for n != nil {
		c := compareEntries(h, n.v.h)
		switch {
		case c == 0:
			return true
		case c < 0:
			n = n.left
		default:
			n = n.right
		}
	}
	return false
}

// each visits the values in order, iteratively (trees can hold thousands of entries).
func (t *tree) each(f func(view)) {
	var stack []*node
	n := t.root
	for n != nil || len(stack) > 0 {
		for n != nil {
			stack = append(stack, n)
			n = n.left
		}
		n = stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		f(n.v)
		n = n.right
	}
}
