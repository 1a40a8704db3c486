package ringquorum

import (
	"testing"
	"time"
)

// long bounds waits that must end by a notification: reaching it fails the test.
const long = time.Minute

func TestUnknownRingIsNotQuorate(t *testing.T) {
	var g Gate
	if g.Quorate() {
		t.Fatal("zero gate is quorate")
	}
	g.Notify(8, true)
	if g.Quorate() {
		t.Fatal("quorate without a ring")
	}
	g.SetRing(8)
	if !g.Quorate() {
		t.Fatal("ring 8 notified quorate, gate says no")
	}
	g.RingChanging()
	if g.Quorate() {
		t.Fatal("quorate while the ring changes")
	}
	g.SetRing(8)
	g.Notify(8, false) // votes changed within the ring
	if g.Quorate() {
		t.Fatal("quorate after the ring lost quorum")
	}
}

// The evidence's schedule: the ring changes, the quorum notification for it is not
// processed yet, the old ring's answer (quorate) must not be used.
func TestWaitsForTheNewRingsNotification(t *testing.T) {
	g := Gate{Timeout: long}
	g.SetRing(8)
	g.Notify(8, true)
	g.SetRing(12)
	got := make(chan bool)
	go func() { got <- g.Quorate() }()
	g.Notify(12, false)
	start := time.Now()
	if <-got {
		t.Fatal("ring 12 is not quorate")
	}
	if time.Since(start) >= long {
		t.Fatal("woke by the timeout, not by the notification")
	}
}

func TestNotificationBeforeRing(t *testing.T) {
	g := Gate{Timeout: long}
	g.SetRing(8)
	g.Notify(8, false)
	g.Notify(12, true) // the quorum goroutine was faster than the group's
	if g.Quorate() {
		t.Fatal("ring 8 was not quorate")
	}
	g.SetRing(12)
	if !g.Quorate() {
		t.Fatal("ring 12 was notified quorate")
	}
	g.Notify(8, true) // late, for a ring that is gone
	g.SetRing(8)
	if g.Quorate() {
		t.Fatal("a late notification for an old ring counted")
	}
}

func TestSkippedRingIsNotQuorate(t *testing.T) {
	g := Gate{Timeout: long}
	g.SetRing(8)
	g.Notify(8, true)
	g.SetRing(12)
	g.Notify(16, true) // ring 12's sync was aborted, no notification for it
	if g.Quorate() {
		t.Fatal("ring 12 never had a notification")
	}
}

func TestTimeoutAndDisconnect(t *testing.T) {
	g := Gate{Timeout: time.Millisecond}
	g.SetRing(8)
	if g.Quorate() {
		t.Fatal("quorate before any notification")
	}
	g.Notify(8, true)
	if !g.Quorate() {
		t.Fatal("not quorate")
	}
	g.Disconnected()
	if g.Quorate() {
		t.Fatal("quorate after the quorum connection was lost")
	}
	g.Notify(8, true) // reconnected: corosync sends the current state first
	if !g.Quorate() {
		t.Fatal("not quorate after reconnecting")
	}
}

func TestPumpDoesNotWait(t *testing.T) {
	var pending []bool
	g := Gate{Timeout: long}
	g.Pump = func() {
		for _, q := range pending {
			g.Notify(12, q)
		}
		pending = nil
	}
	g.SetRing(8)
	g.Notify(8, true)
	g.SetRing(12)
	pending = []bool{false}
	if g.Quorate() {
		t.Fatal("pumped notification not used")
	}
	g.SetRing(16)
	if g.Quorate() { // nothing to pump: refused at once
		t.Fatal("quorate without a notification")
	}
}
