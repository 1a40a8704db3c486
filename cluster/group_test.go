package cluster

import (
	"testing"

	"github.com/pmxcfs-go/pmxcfs/cpg"
)

// Only the changes corosync makes while syncing a new totem ring (nodes gone or come) leave
// the ring unknown until its totem membership; a daemon that joins, leaves or dies on a node
// that stays changes no ring, and no totem membership follows.
func TestRingChange(t *testing.T) {
	self := cpg.Address{NodeID: 1, PID: 10, Reason: cpg.ReasonJoin}
	for _, tc := range []struct {
		name string
		c    cpg.ConfChg
		want bool
	}{
		{"own join", cpg.ConfChg{Joined: []cpg.Address{self}}, false},
		{"daemon joined", cpg.ConfChg{Joined: []cpg.Address{{NodeID: 2, PID: 7, Reason: cpg.ReasonJoin}}}, false},
		{"daemon left", cpg.ConfChg{Left: []cpg.Address{{NodeID: 2, PID: 7, Reason: cpg.ReasonLeave}}}, false},
		{"daemon died", cpg.ConfChg{Left: []cpg.Address{{NodeID: 2, PID: 7, Reason: cpg.ReasonProcDown}}}, false},
		{"node down", cpg.ConfChg{Left: []cpg.Address{{NodeID: 2, PID: 7, Reason: cpg.ReasonNodeDown}}}, true},
		{"node up", cpg.ConfChg{Joined: []cpg.Address{{NodeID: 3, PID: 8, Reason: cpg.ReasonNodeUp}}}, true},
	} {
		if got := ringChange(tc.c); got != tc.want {
			t.Errorf("%s: ringChange = %v, want %v", tc.name, got, tc.want)
		}
	}
}
