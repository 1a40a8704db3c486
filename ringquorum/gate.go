// Package ringquorum decides whether a change delivered by the DCDB group may be applied:
// only when corosync's quorum notification for the totem ring the change was delivered in
// has been processed and said quorate.
//
// Quorum and the process group reach the daemon over two corosync connections. For a new
// ring, corosync sends the group's membership change first, then the totem membership with
// the ring id, then (after the other services synced) the quorum notification for that ring,
// and only then lets new messages through. A flag that one goroutine sets from the quorum
// connection while another delivers messages can therefore still say "quorate" when a
// message ordered in a ring without quorum is delivered: a node cut off alone applied and
// acknowledged a write that the next sync replaced with the majority's data. Upstream runs
// both connections on one thread, the quorum one at a higher priority (loop.c), so
// dcdb.c:dcdb_deliver mostly sees the new state; here the ring id ties each delivery to the
// notification that belongs to it, whatever the goroutines' timing.
package ringquorum

import (
	"sync"
	"time"
)

// DefaultTimeout bounds how long Quorate waits for the quorum notification of the current
// ring. corosync sends it a few milliseconds after the ring's membership; when it does not
// come, the change is refused (the group then resyncs), which is safe.
const DefaultTimeout = 5 * time.Second

// Gate joins the two corosync streams. The zero value is ready: no ring and no quorum
// known, so Quorate is false until both arrived.
type Gate struct {
	// Timeout is how long Quorate waits for the current ring's notification; DefaultTimeout
	// when zero.
	Timeout time.Duration
	// Pump, if set, is called by Quorate before it decides, to process what the quorum
	// connection holds; Quorate then does not wait. For simulations that run the quorum
	// connection on the delivering goroutine.
	Pump func()

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every change
	ring      uint64
	ringKnown bool
	connected bool
	latest    uint64          // highest ring notified since connecting
	quorate   map[uint64]bool // per ring notified, rings older than ring pruned
}

// Notify records a quorum notification (corosync sends one for every ring, and again when
// the votes change within a ring).
func (g *Gate) Notify(ring uint64, quorate bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.quorate == nil {
		g.quorate = map[uint64]bool{}
	}
	g.connected = true
	if !g.ringKnown || ring >= g.ring {
		g.quorate[ring] = quorate
	}
	g.latest = max(g.latest, ring)
	g.wakeLocked()
}

// Disconnected forgets what the quorum connection said: no notification can come until it
// is connected again.
func (g *Gate) Disconnected() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.connected = false
	g.latest = 0
	g.quorate = nil
	g.wakeLocked()
}

// RingChanging marks that the group's membership changed with the totem ring (members left
// or joined with their node) and that the new ring's id has not arrived yet: until SetRing,
// nothing delivered counts as quorate. Also called when the group connects.
func (g *Gate) RingChanging() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ringKnown = false
	g.wakeLocked()
}

// SetRing records the totem ring of the group connection (its totem membership callback).
func (g *Gate) SetRing(ring uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ring, g.ringKnown = ring, true
	for r := range g.quorate {
		if r < ring {
			delete(g.quorate, r)
		}
	}
	g.wakeLocked()
}

func (g *Gate) wakeLocked() {
	if g.changed != nil {
		close(g.changed)
		g.changed = nil
	}
}

// decideLocked returns the answer for the current ring, or ok=false while its notification
// may still come.
func (g *Gate) decideLocked() (quorate, ok bool) {
	if !g.ringKnown {
		// The ring id comes on the group connection itself, after this delivery.
		return false, true
	}
	if !g.connected {
		return false, false // the quorum connection is (re)connecting
	}
	if q, seen := g.quorate[g.ring]; seen {
		return q, true
	}
	// A notification for a later ring means this ring's was never sent (its sync was cut
	// short by the next membership change).
	return false, g.latest > g.ring
}

// Quorate reports whether a change delivered now may be applied. Call it on the group's
// dispatch goroutine; it may wait up to Timeout for the current ring's notification.
func (g *Gate) Quorate() bool {
	var timer <-chan time.Time
	pumped := false
	for {
		g.mu.Lock()
		q, ok := g.decideLocked()
		if ok || (pumped && g.Pump != nil) {
			g.mu.Unlock()
			return q
		}
		if g.Pump != nil {
			g.mu.Unlock()
			g.Pump()
			pumped = true
			continue
		}
		if g.changed == nil {
			g.changed = make(chan struct{})
		}
		ch := g.changed
		g.mu.Unlock()
		if timer == nil {
			d := g.Timeout
			if d <= 0 {
				d = DefaultTimeout
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-ch:
		case <-timer:
			return false
		}
	}
}
