package dfsm

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
type Confirmer interface {
	// ConfirmMessage returns a NORMAL message that changes nothing on any node.
	ConfirmMessage() (subtype uint16, payload []byte)
}

// confirmState is guarded by sendMu.
type confirmState struct {
	held       []*Pending // applied here, waiting for the next confirmation
	confirming []*Pending // covered by the confirmation in flight
	count      uint64     // that confirmation's count, 0 when none is in flight
}

// holdLocked keeps a successful local result until it is confirmed; false when the
// application does not confirm.
func (d *DFSM) holdLocked(p *Pending) bool {
	if d.confirmer == nil || p.result < 0 {
		return false
	}
	d.confirm.held = append(d.confirm.held, p)
	return true
}

// confirmedLocked handles the local delivery of message count.
func (d *DFSM) confirmedLocked(count uint64, result int) {
	c := &d.confirm
	if c.count == 0 || count != c.count {
		return
	}
	for _, p := range c.confirming {
		p.unconfirmed = result < 0
		close(p.done)
	}
	c.confirming, c.count = nil, 0
}

// sendConfirmLocked sends a confirmation for the held results when none is in flight. A
// failed send leaves them held: the next local result tries again, a restart releases them.
func (d *DFSM) sendConfirmLocked() {
	c := &d.confirm
	if len(c.held) == 0 || c.count != 0 {
		return
	}
	subtype, payload := d.confirmer.ConfirmMessage()
	count, err := d.mcastNormalLocked(subtype, payload)
	if err != nil {
		d.log.WithError(err).Error("cannot send the confirmation of local changes")
		return
	}
	c.confirming, c.held, c.count = c.held, nil, count
}

// abortConfirmLocked releases every held result as unconfirmed.
func (d *DFSM) abortConfirmLocked() {
	c := &d.confirm
	for _, p := range append(c.confirming, c.held...) {
		p.unconfirmed = true
		close(p.done)
	}
	*c = confirmState{}
}
