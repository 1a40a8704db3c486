package dfsm_test

import (
	"bytes"
	"testing"

	"github.com/pmxcfs-go/pmxcfs/dfsm"
)

func seedMessages() [][]byte {
	e := dfsm.Epoch{Counter: 3, Time: 1795349883, NodeID: 1, PID: 15531}
	var out [][]byte
	for t := dfsm.MsgNormal; t <= dfsm.MsgVerify+1; t++ {
		m := dfsm.Message{Header: dfsm.Header{Type: t, ProtocolVersion: 1, Time: 1795349883}, Count: 7, Epoch: e, Payload: []byte("a=1")}
		out = append(out, m.Encode())
	}
	vr := dfsm.Message{Header: dfsm.Header{Type: dfsm.MsgVerifyRequest, ProtocolVersion: 1}, Epoch: e, Payload: dfsm.EncodeVerifyRequest(9)}
	v := dfsm.Message{Header: dfsm.Header{Type: dfsm.MsgVerify, ProtocolVersion: 1}, Epoch: e, Payload: dfsm.EncodeVerify(9, [32]byte{1})}
	return append(out, vr.Encode(), v.Encode(), nil, []byte{1, 0})
}

// FuzzDecode: decoding never panics, and what decodes re-encodes to the
// same bytes.
func FuzzDecode(f *testing.F) {
	for _, b := range seedMessages() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := dfsm.DecodeHeader(b); (err != nil) != (len(b) < dfsm.BaseHeaderLen) {
			t.Fatalf("DecodeHeader error %v for %d bytes", err, len(b))
		}
		m, err := dfsm.Decode(b)
		if err != nil {
			return
		}
		if re := m.Encode(); !bytes.Equal(re, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", re, b)
		}
		if m.Type == dfsm.MsgVerifyRequest {
			if id, err := dfsm.DecodeVerifyRequest(m.Payload); err == nil && !bytes.Equal(dfsm.EncodeVerifyRequest(id), m.Payload) {
				t.Fatal("verify request round trip")
			}
		}
		if m.Type == dfsm.MsgVerify {
			if id, sum, err := dfsm.DecodeVerify(m.Payload); err == nil && !bytes.Equal(dfsm.EncodeVerify(id, sum), m.Payload) {
				t.Fatal("verify round trip")
			}
		}
	})
}

// FuzzEngineDeliver: any bytes from a member, in any mode a sync round goes
// through, never panic an engine, and the group still converges after.
func FuzzEngineDeliver(f *testing.F) {
	for _, b := range seedMessages() {
		for steps := uint8(0); steps < 12; steps += 3 {
			f.Add(steps, b)
		}
	}
	f.Fuzz(func(t *testing.T, steps uint8, b []byte) {
		c := newCluster(t, 3)
		c.sim.Run(100000)
		c.write(c.sim.Proc(2))
		c.sim.Partition([]uint32{1, 2}, []uint32{3})
		c.sim.Run(100000)
		c.sim.Heal()
		for i := 0; i < int(steps%16); i++ {
			c.sim.Step()
		}
		p := c.sim.Proc(uint32(steps%3) + 1)
		if p.Joined() {
			if err := c.sim.Inject(p, b); err != nil {
				t.Fatal(err)
			}
		}
		c.settle()
		for _, p := range c.sim.Alive() {
			if !p.Engine.Restartable() {
				return // a newer protocol version ends membership for good
			}
		}
		c.check(false)
	})
}
