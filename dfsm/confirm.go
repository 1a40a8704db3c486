package dfsm

import (
	"math"
	"syscall"
)

// Confirmer is implemented by applications whose local writers may only learn a success
// once the other members are known to have the message as well (DCDB).
//
// corosync delivers a node's own message to it right after sending it (agreed order), before
// any other member received it. A node cut off at that moment applies and reports a change
// that the rest of the group never sees, and the sync after the heal replaces it with the
// majority's data; upstream reports success in that case. A message this node sends after
// that delivery can only be sent once the token has gone round the ring past every member,
// each of which then had the earlier message or asked for it again. So a local success is
// held until such a confirmation message, sent after it was applied, has been applied too.
// If the group changes first, the confirmation arrives in the new membership: applied there
// (quorum kept with the members that moved along, which got the message too), it confirms;
// refused there, the held writers get EIO: applied here, fate unknown.
//
// Any other message of this process, sent after a result was applied and applied in turn
// with success, proves the same, so concurrent local writers confirm each other. A
// confirmation is therefore sent only once the messages that were in flight when a result
// was held have come back: by then a writer released meanwhile has usually sent one that
// covers it, and if none did, the wait was bounded by messages already sent.
type Confirmer interface {
	// ConfirmMessage returns a NORMAL message that changes nothing on any node.
	ConfirmMessage() (subtype uint16, payload []byte)
}

// confirmState is guarded by sendMu.
type confirmState struct {
	held []*Pending // applied here, waiting for a message that covers them
	// sent are this process's NORMAL messages not yet delivered back, confirmations
	// included, in the order sent.
	sent []sentMessage
	// confirmation is the count of the confirmation in flight, 0 when none is.
	confirmation uint64
	// horizon is the newest own message sent when a result was last held: no
	// confirmation is sent before it has come back.
	horizon uint64
	// owed are the messages sent with SendSyncLater whose success was released before
	// any confirmation; lost are those of them whose confirmation failed, until Confirm
	// reports it.
	owed, lost map[uint64]struct{}
}

// sentMessage is an own message in flight and what it confirms once applied with
// success: every own message applied here before it was sent.
type sentMessage struct{ count, covers uint64 }

// holdLocked keeps a successful local result until it is confirmed, or for a message
// sent with SendSyncLater records that it is owed a confirmation; false when the result
// is released now.
func (d *DFSM) holdLocked(p *Pending) bool {
	if d.confirmer == nil || p.result < 0 {
		return false
	}
	c := &d.confirm
	if p.later {
		if c.owed == nil {
			c.owed = map[uint64]struct{}{}
		}
		c.owed[p.Count] = struct{}{}
		return false
	}
	c.held = append(c.held, p)
	c.horizon = d.msgCount
	return true
}

// SendSyncLater is SendSync without the wait for the confirmation: a success is released
// as soon as this process applied the message, and Confirm(count) later waits for the
// confirmation it is owed. DCDB uses it for a file created through an open descriptor,
// which reports the outcome at close: the file's writes (one confirmation covers every
// message applied before it was sent) or Confirm then.
func (d *DFSM) SendSyncLater(subtype uint16, payload []byte) (result int, count uint64, err error) {
	d.sendMu.Lock()
	p, err := d.sendLocked(subtype, payload, true)
	if err == nil {
		p.later = true
	}
	d.sendMu.Unlock()
	if err != nil {
		return 0, 0, syscall.EBUSY
	}
	result, err = p.Result()
	return result, p.Count, err
}

// Confirm waits until the message count sent with SendSyncLater is confirmed. It returns
// at once when it is already confirmed (or was never owed one: a failure, or sent while
// this process was alone in the group), and syscall.EIO when its fate is unknown, like a
// SendSync whose confirmation failed.
func (d *DFSM) Confirm(count uint64) error {
	d.sendMu.Lock()
	c := &d.confirm
	if _, ok := c.lost[count]; ok {
		delete(c.lost, count)
		d.sendMu.Unlock()
		return syscall.EIO
	}
	if _, ok := c.owed[count]; !ok {
		d.sendMu.Unlock()
		return nil
	}
	// A barrier: no message of its own, released by the message that covers count.
	p := &Pending{Count: count, done: make(chan struct{}), processed: true}
	c.held = append(c.held, p)
	c.horizon = d.msgCount
	d.sendConfirmLocked()
	d.sendMu.Unlock()
	_, err := p.Result()
	return err
}

// sentLocked records a NORMAL message just sent, which will confirm what was applied
// before it.
func (d *DFSM) sentLocked(count uint64) {
	if d.confirmer != nil {
		d.confirm.sent = append(d.confirm.sent, sentMessage{count: count, covers: d.rcvd})
	}
}

// confirmedLocked handles the local delivery of message count with result: applied with
// success, it confirms what it covers; a confirmation that failed leaves what it covers
// unconfirmed (EIO), any other failed message proves nothing.
func (d *DFSM) confirmedLocked(count uint64, result int) {
	c := &d.confirm
	// This process's messages come back in the order sent: any earlier one still listed
	// was lost and will not confirm anything.
	for len(c.sent) > 0 && c.sent[0].count < count {
		if c.sent[0].count == c.confirmation {
			c.confirmation = 0
		}
		c.sent = c.sent[1:]
	}
	if len(c.sent) == 0 || c.sent[0].count != count {
		return
	}
	m := c.sent[0]
	c.sent = c.sent[1:]
	switch {
	case result >= 0:
		c.releaseLocked(m.covers, false)
	case count == c.confirmation:
		c.releaseLocked(m.covers, true)
	}
	if count == c.confirmation {
		c.confirmation = 0
	}
}

// releaseLocked releases the held results of the messages up to covers, confirmed or
// (unconfirmed) with EIO, and settles what SendSyncLater messages up to covers are owed.
func (c *confirmState) releaseLocked(covers uint64, unconfirmed bool) {
	kept := c.held[:0]
	for _, p := range c.held {
		if p.Count <= covers {
			p.unconfirmed = unconfirmed
			close(p.done)
		} else {
			kept = append(kept, p)
		}
	}
	c.held = kept
	for o := range c.owed {
		if o <= covers {
			delete(c.owed, o)
			if unconfirmed {
				c.loseLocked(o)
			}
		}
	}
}

func (c *confirmState) loseLocked(count uint64) {
	if c.lost == nil {
		c.lost = map[uint64]struct{}{}
	}
	c.lost[count] = struct{}{}
}

// sendConfirmLocked sends a confirmation for the held results once no confirmation is in
// flight and every message sent before the last was held has come back. A failed send
// leaves them held: the next local result tries again, a restart releases them.
func (d *DFSM) sendConfirmLocked() {
	c := &d.confirm
	if len(c.held) == 0 || c.confirmation != 0 || d.rcvd < c.horizon {
		return
	}
	subtype, payload := d.confirmer.ConfirmMessage()
	count, err := d.mcastNormalLocked(subtype, payload)
	if err != nil {
		d.log.WithError(err).Error("cannot send the confirmation of local changes")
		return
	}
	d.sentLocked(count)
	c.confirmation = count
}

// abortConfirmLocked releases every held result as unconfirmed.
func (d *DFSM) abortConfirmLocked() {
	c := &d.confirm
	c.releaseLocked(math.MaxUint64, true)
	*c = confirmState{lost: c.lost}
}
