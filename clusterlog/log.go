package clusterlog

import (
	"errors"
	"fmt"
	"sync"

	"github.com/sirupsen/logrus"
)

// Log is the cluster log of one daemon: a ring of DefaultRingSize bytes plus the dedup
// table (newest (time, uid) seen per node digest). Safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	ring    ring
	dedup   map[uint64]stamp
	lastUID uint32
	log     *logrus.Entry
}

type stamp struct{ time, uid uint32 }

// New returns an empty log. log may be nil.
func New(log *logrus.Entry) *Log {
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	return &Log{ring: newRing(DefaultRingSize), dedup: map[uint64]stamp{}, log: log}
}

// NewEntry packs a local entry (see Pack) with the next uid of this log. Upstream numbers
// entries per process from 1; a daemon has one Log, so the counter lives here.
func (l *Log) NewEntry(node, ident, tag string, pid, time uint32, priority uint8, msg string) (Entry, error) {
	if priority >= 8 {
		return Entry{}, fmt.Errorf("%w: priority %d out of range", ErrBadEntry, priority)
	}
	l.mu.Lock()
	l.lastUID++
	uid := l.lastUID
	l.mu.Unlock()
	return Pack(uid, node, ident, tag, pid, time, priority, msg)
}

// Add packs a local entry and inserts it; it returns the entry for sending to the cluster.
func (l *Log) Add(node, ident, tag string, pid, time uint32, priority uint8, msg string) (Entry, error) {
	e, err := l.NewEntry(node, ident, tag, pid, time, priority, msg)
	if err != nil {
		return Entry{}, err
	}
	l.Insert(e)
	return e, nil
}

// Insert copies e into the ring if it is newer than everything seen from its node (larger
// time, or same time and larger uid); it reports whether it did.
func (l *Log) Insert(e Entry) bool {
	b, err := e.Marshal()
	if err != nil {
		l.log.Warnf("ignore invalid cluster log entry: %v", err)
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !recordNewer(l.dedup, e.NodeDigest, e.Time, e.UID) {
		l.log.Info("ignore insert of duplicate cluster log")
		return false
	}
	l.ring.copyEntry(b)
	return true
}

// recordNewer is upstream's dedup_lookup.
func recordNewer(dedup map[uint64]stamp, digest uint64, time, uid uint32) bool {
	s, ok := dedup[digest]
	if !ok || time > s.time || (time == s.time && uid > s.uid) {
		dedup[digest] = stamp{time, uid}
		return true
	}
	return false
}

// State sorts the ring in place (as upstream does before sending it) and returns a copy
// of its bytes: the KVSTORE state, DefaultRingSize bytes.
func (l *Log) State() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ring.cpos() != 0 {
		l.ring = l.ring.sorted()
	}
	return append([]byte(nil), l.ring...)
}

// ErrMergeInput is returned by Merge when it was given fewer than two states or a bad
// local index; the log is then left unchanged (upstream logs "unable to merge log files").
var ErrMergeInput = errors.New("cluster log merge needs at least two states and a valid local index")

// Merge replaces the log with the merge of the members' states at a KVSTORE sync
// (clusterlog_merge). states[localIndex] is ignored and the live log used instead; a
// state that is not a ring of its own declared size (len > 8, size field == len) counts
// as missing. Entries are taken newest first across all rings (ties go to the lowest
// index), duplicates by (time, node digest, uid) skipped, until 131072-8-4096 bytes are
// collected; the result is a fresh DefaultRingSize ring in upstream's order, and the
// dedup table is rebuilt from it.
func (l *Log) Merge(states [][]byte, localIndex int) error {
	if len(states) < 2 || localIndex < 0 || localIndex >= len(states) {
		return ErrMergeInput
	}
	rings := make([]ring, len(states))
	for i, s := range states {
		if i == localIndex {
			continue
		}
		if len(s) > ringHeaderSize && ring(s).sizeField() == uint32(len(s)) {
			rings[i] = ring(s)
		} else {
			l.log.Errorf("received log with wrong size %d", len(s))
		}
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	rings[localIndex] = l.ring

	res := newRing(DefaultRingSize)
	dedup := map[uint64]stamp{}
	t := &tree{}
	cpos := make([]uint32, len(rings))
	steps := make([]int, len(rings))
	for i, r := range rings {
		if r != nil {
			cpos[i] = r.cpos()
		}
	}
	const limit = DefaultRingSize - ringHeaderSize - MaxEntrySize
	var logsize uint64
	for {
		found := -1
		var last uint32
		var cur view
		for i, r := range rings {
			if cpos[i] == 0 {
				continue
			}
			v, ok := r.entryAt(cpos[i])
			if !ok || steps[i] >= r.maxSteps() {
				cpos[i] = 0
				continue
			}
			if v.h.time > last {
				last, found, cur = v.h.time, i, v
			}
		}
		if found < 0 {
			break
		}
		r, pos := rings[found], cpos[found]
		steps[found]++
		if !t.contains(cur.h) {
			t.insert(cur)
			recordNewer(dedup, cur.h.nodeDigest, cur.h.time, cur.h.uid)
			logsize += uint64(cur.h.next - pos) // C: u32 difference into a size_t
			if logsize >= limit {
				break
			}
		}
		switch prev := cur.h.prev; {
		case prev == 0 || (pos < prev && prev <= r.cpos()):
			cpos[found] = 0 // oldest entry, or wrap into overwritten space
		case !r.inWindow(prev):
			cpos[found] = 0 // wrap into the newest entry
		default:
			cpos[found] = prev
		}
	}
	t.each(func(v view) { res.copyEntry(v.b) })
	l.ring = res
	l.dedup = dedup
	return nil
}
