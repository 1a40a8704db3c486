package votequorum

/*
#include <stdlib.h>
#include <corosync/votequorum.h>
*/
import "C"

import (
	"unsafe"

	"github.com/pmxcfs-go/pmxcfs/internal/cs"
)

// Flags are the VOTEQUORUM_INFO_* bits of Info.Flags.
type Flags uint32

const (
	FlagTwoNode           Flags = C.VOTEQUORUM_INFO_TWONODE
	FlagQuorate           Flags = C.VOTEQUORUM_INFO_QUORATE
	FlagWaitForAll        Flags = C.VOTEQUORUM_INFO_WAIT_FOR_ALL
	FlagLastManStanding   Flags = C.VOTEQUORUM_INFO_LAST_MAN_STANDING
	FlagAutoTieBreaker    Flags = C.VOTEQUORUM_INFO_AUTO_TIE_BREAKER
	FlagAllowDownscale    Flags = C.VOTEQUORUM_INFO_ALLOW_DOWNSCALE
	FlagQdeviceRegistered Flags = C.VOTEQUORUM_INFO_QDEVICE_REGISTERED
	FlagQdeviceAlive      Flags = C.VOTEQUORUM_INFO_QDEVICE_ALIVE
	FlagQdeviceCastVote   Flags = C.VOTEQUORUM_INFO_QDEVICE_CAST_VOTE
	FlagQdeviceMasterWins Flags = C.VOTEQUORUM_INFO_QDEVICE_MASTER_WINS
)

// Node states of Info.State.
const (
	NodeMember  = C.VOTEQUORUM_NODESTATE_MEMBER
	NodeDead    = C.VOTEQUORUM_NODESTATE_DEAD
	NodeLeaving = C.VOTEQUORUM_NODESTATE_LEAVING
)

// Info is votequorum's view of one node (struct votequorum_info).
type Info struct {
	NodeID          uint32
	State           uint32
	Votes           uint32
	ExpectedVotes   uint32
	HighestExpected uint32
	TotalVotes      uint32
	Quorum          uint32
	Flags           Flags
	QdeviceVotes    uint32
	QdeviceName     string
}

// VoteQuorum is one libvotequorum connection, used for queries only (no
// callbacks are registered).
type VoteQuorum struct {
	c C.votequorum_handle_t
	g *cs.Guard
}

// OpenVoteQuorum connects with votequorum_initialize.
func OpenVoteQuorum() (*VoteQuorum, error) {
	v := &VoteQuorum{}
	if err := cs.Check("votequorum_initialize", cs.Code(C.votequorum_initialize(&v.c, nil))); err != nil {
		return nil, err
	}
	g, err := cs.NewGuard(func() { C.votequorum_finalize(v.c) })
	if err != nil {
		C.votequorum_finalize(v.c)
		return nil, err
	}
	v.g = g
	return v, nil
}

// Close finalizes the handle; safe to call twice and concurrently.
func (v *VoteQuorum) Close() error {
	v.g.Close()
	return nil
}

func (v *VoteQuorum) call(op string, f func() C.cs_error_t) error {
	if !v.g.Enter() {
		return cs.Closed(op)
	}
	defer v.g.Leave()
	return cs.Check(op, cs.Code(f()))
}

// LocalNode is the nodeid votequorum_getinfo understands as "this node".
const LocalNode = 0

// GetInfo returns the vote information of nodeid (LocalNode for this node).
func (v *VoteQuorum) GetInfo(nodeid uint32) (Info, error) {
	var ci C.struct_votequorum_info
	if err := v.call("votequorum_getinfo", func() C.cs_error_t {
		return C.votequorum_getinfo(v.c, C.uint(nodeid), &ci)
	}); err != nil {
		return Info{}, err
	}
	name := C.GoBytes(unsafe.Pointer(&ci.qdevice_name[0]), C.int(len(ci.qdevice_name)))
	for i, b := range name {
		if b == 0 {
			name = name[:i]
			break
		}
	}
	return Info{
		NodeID:          uint32(ci.node_id),
		State:           uint32(ci.node_state),
		Votes:           uint32(ci.node_votes),
		ExpectedVotes:   uint32(ci.node_expected_votes),
		HighestExpected: uint32(ci.highest_expected),
		TotalVotes:      uint32(ci.total_votes),
		Quorum:          uint32(ci.quorum),
		Flags:           Flags(ci.flags),
		QdeviceVotes:    uint32(ci.qdevice_votes),
		QdeviceName:     string(name),
	}, nil
}

// SetExpected changes the cluster's expected votes (`pvecm expected`).
func (v *VoteQuorum) SetExpected(votes uint32) error {
	return v.call("votequorum_setexpected", func() C.cs_error_t {
		return C.votequorum_setexpected(v.c, C.uint(votes))
	})
}
