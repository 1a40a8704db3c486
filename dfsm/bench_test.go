package dfsm_test

import (
	"fmt"
	"testing"

	"github.com/pmxcfs-go/pmxcfs/dfsm"
)

// BenchmarkSync measures the synchronisation cost for n simulated nodes. One
// iteration is two rounds: the highest node's process crashes (n-1 members
// resync), then a new empty process starts there (SYNC_START, n STATEs
// delivered to n members, the leader's UPDATEs, the newcomer's commit).
func BenchmarkSync(b *testing.B) {
	for _, n := range []int{16, 64, 128} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			c := newCluster(b, n)
			c.sim.Run(1 << 30)
			for i := 0; i < 10; i++ {
				c.write(c.sim.Proc(1))
			}
			c.sim.Run(1 << 30)
			b.ResetTimer()
			for b.Loop() {
				c.sim.Crash(c.sim.Proc(uint32(n)))
				c.sim.Run(1 << 30)
				c.spawn(uint32(n))
				c.sim.Run(1 << 30)
			}
			b.StopTimer()
			if m := c.sim.Proc(uint32(n)).Engine.Mode(); m != dfsm.ModeSynced {
				b.Fatalf("newcomer ends in %s", m)
			}
		})
	}
}
