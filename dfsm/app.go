package dfsm

import (
	"fmt"
	"time"
)

// Member is one CPG group member: a process on a node.
type Member struct {
	NodeID uint32
	PID    uint32
}

func (m Member) String() string { return fmt.Sprintf("%d/%d", m.NodeID, m.PID) }

func (m Member) less(o Member) bool {
	if m.NodeID != o.NodeID {
		return m.NodeID < o.NodeID
	}
	return m.PID < o.PID
}

// NodeInfo is one member's entry in a sync round.
type NodeInfo struct {
	Member
	// State is the member's STATE payload, nil until it arrived.
	State []byte
	// Synced is set by the application in ProcessStateUpdate for every member
	// whose state already equals the leader's.
	Synced bool
}

// SyncInfo is the membership of the current configuration, sorted by
// (nodeid, pid), with the states collected in the current sync round.
type SyncInfo struct {
	Nodes []NodeInfo
	// Local is the index of this process in Nodes, or -1.
	Local int
	// Data belongs to the application (e.g. the received updates). When it
	// is non-nil at the end of a round, Cleanup is called and it is reset.
	Data any
}

// LocalNode returns this process's entry, or nil if it is not a member.
func (si *SyncInfo) LocalNode() *NodeInfo {
	if si == nil || si.Local < 0 {
		return nil
	}
	return &si.Nodes[si.Local]
}

// Application is the replicated application driven by the engine; the
// methods mirror upstream's dfsm_callbacks_t. All of them run on the
// dispatch goroutine. A returned error makes the engine leave the group
// (upstream: a negative result). Payloads alias the delivered message: copy
// what you keep.
type Application interface {
	// Deliver applies a NORMAL message in total order. result goes back to
	// the local writer when from is this process.
	Deliver(from Member, subtype uint16, msgTime uint32, payload []byte) (result int, err error)
	// Confchg reports the new member list as the transport gave it.
	Confchg(members []Member)
	// GetState returns this node's state for a STATE message; empty means
	// failure.
	GetState() ([]byte, error)
	// ProcessStateUpdate runs once all states are in: it marks the synced
	// members (and, on the leader, sends the updates with SendUpdate and
	// SendUpdateComplete).
	ProcessStateUpdate(si *SyncInfo) error
	// ProcessUpdate takes one UPDATE from the leader while this node is in
	// UPDATE mode.
	ProcessUpdate(si *SyncInfo, from Member, payload []byte) error
	// Commit applies the collected updates on UPDATE_COMPLETE.
	Commit(si *SyncInfo) error
	// Cleanup frees what the application stored in si.Data.
	Cleanup(si *SyncInfo)
	// Synced is called each time the engine changes to SYNCED.
	Synced()
}

// Checksummer is implemented by applications that take part in periodic
// verification (DCDB; KVSTORE does not).
type Checksummer interface {
	Checksum() ([ChecksumLen]byte, error)
}

// Starter is implemented by applications that must know when this process (re)joins the
// group: everything they learned about the group before is then stale.
type Starter interface {
	Starting()
}

// Flusher is implemented by applications that make the effect of delivered messages
// durable in batches (DCDB: one SQLite commit for all the messages of one dispatch).
// The engine calls Flush after every input (Deliver, Confchg) or, between BeginBatch
// and EndBatch, once at EndBatch; only then are the results handed to this process's
// waiting writers. An error fails every result since the previous Flush and puts the
// engine into ERROR mode.
type Flusher interface {
	Flush() error
}

// Transport is the process group. Mcast multicasts one message in agreed
// order to the current members, this process included; it must be safe for
// concurrent use. It returns ErrTryAgain while the group is congested (the
// engine then retries like upstream). Join and Leave change our membership.
type Transport interface {
	Mcast(msg []byte) error
	Join() error
	Leave() error
}

// Clock gives the wall-clock time for message headers and epochs, and the
// sleep between send retries.
type Clock interface {
	Now() time.Time
	Sleep(d time.Duration)
}

type systemClock struct{}

func (systemClock) Now() time.Time        { return time.Now() }
func (systemClock) Sleep(d time.Duration) { time.Sleep(d) }

// SystemClock is the real clock.
var SystemClock Clock = systemClock{}
