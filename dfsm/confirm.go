package dfsm

import "syscall"

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
	held       []*Pending // applied here, waiting for the next confirmation
	confirming []*Pending // covered by the confirmation in flight
	count      uint64     // that confirmation's count, 0 when none is in flight
	covers     uint64     // the last own message applied when it was sent
	// inflight maps this process's other NORMAL messages not yet delivered back to what
	// each covers, as covers does for the confirmation.
	inflight map[uint64]uint64
	// horizon is the newest own message sent when a result was last held: no
	// confirmation is sent before it has come back.
	horizon uint64
	// owed are the messages sent with SendSyncLater whose success was released before
	// any confirmation; lost are those of them whose confirmation failed, until Confirm
	// reports it.
	owed, lost map[uint64]struct{}
}

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
	// A barrier: no message of its own, released with the confirmation that covers count.
	p := &Pending{Count: count, done: make(chan struct{}), processed: true}
	if c.count != 0 && c.covers >= count {
		c.confirming = append(c.confirming, p)
	} else {
		c.held = append(c.held, p)
		c.horizon = d.msgCount
		d.sendConfirmLocked()
	}
	d.sendMu.Unlock()
	_, err := p.Result()
	return err
}

// sentLocked records a NORMAL message just sent, which will confirm what was applied
// before it.
func (d *DFSM) sentLocked(count uint64) {
	if d.confirmer == nil {
		return
	}
	c := &d.confirm
	if c.inflight == nil {
		c.inflight = map[uint64]uint64{}
	}
	c.inflight[count] = d.rcvd
}

// confirmedLocked handles the local delivery of message count.
func (d *DFSM) confirmedLocked(count uint64, result int) {
	c := &d.confirm
	covers, ok := c.inflight[count]
	// This process's messages come back in the order sent: any earlier one still listed
	// was lost and will not confirm anything.
	for k := range c.inflight {
		if k <= count {
			delete(c.inflight, k)
		}
	}
	if ok && result >= 0 {
		c.coveredLocked(covers)
	}
	if c.count == 0 || count != c.count {
		return
	}
	for _, p := range c.confirming {
		p.unconfirmed = result < 0
		close(p.done)
	}
	for o := range c.owed {
		if o <= c.covers {
			delete(c.owed, o)
			if result < 0 {
				c.loseLocked(o)
			}
		}
	}
	c.confirming, c.count = nil, 0
}

// coveredLocked releases, as confirmed, the results of the messages up to covers: an own
// message sent after they were applied was applied with success.
func (c *confirmState) coveredLocked(covers uint64) {
	keep := func(ps []*Pending) []*Pending {
		kept := ps[:0]
		for _, p := range ps {
			if p.Count <= covers {
				close(p.done)
			} else {
				kept = append(kept, p)
			}
		}
		return kept
	}
	c.held, c.confirming = keep(c.held), keep(c.confirming)
	for o := range c.owed {
		if o <= covers {
			delete(c.owed, o)
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
	if len(c.held) == 0 || c.count != 0 || d.rcvd < c.horizon {
		return
	}
	subtype, payload := d.confirmer.ConfirmMessage()
	count, err := d.mcastNormalLocked(subtype, payload)
	if err != nil {
		d.log.WithError(err).Error("cannot send the confirmation of local changes")
		return
	}
	c.confirming, c.held, c.count, c.covers = c.held, nil, count, d.rcvd
}

// abortConfirmLocked releases every held result as unconfirmed.
func (d *DFSM) abortConfirmLocked() {
	c := &d.confirm
	for _, p := range append(c.confirming, c.held...) {
		p.unconfirmed = true
		close(p.done)
	}
	for o := range c.owed {
		c.loseLocked(o)
	}
	*c = confirmState{lost: c.lost}
}
