package dfsm_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"github.com/pmxcfs-go/pmxcfs/dfsm"
	"github.com/pmxcfs-go/pmxcfs/dfsm/dfsmtest"
	"github.com/pmxcfs-go/pmxcfs/internal/wiretrace"
)

// The upstream wire traces (../shared/fixtures/upstream-9.1.6-wire, see its
// README) are the oracle here: what three upstream 9.1.6 daemons sent and
// received over CPG.

type (
	traceEvent  = wiretrace.Event
	traceMember = wiretrace.Member
)

func members(ms []traceMember) []dfsm.Member {
	out := make([]dfsm.Member, len(ms))
	for i, m := range ms {
		out[i] = dfsm.Member{NodeID: m.NodeID, PID: m.PID}
	}
	return out
}

var le = binary.LittleEndian

func readTrace(t *testing.T, node string) []traceEvent { return wiretrace.Read(t, node, "") }

func groupVersion(group string) uint32 {
	if group == "pve_dcdb_v1" {
		return 1
	}
	return 0
}

// TestTraceDecode decodes every message upstream sent or received,
// re-encodes it byte for byte, and checks the header invariants the fixture
// README lists.
func TestTraceDecode(t *testing.T) {
	type key struct {
		proc  uint32
		group string
	}
	perType := map[string]map[dfsm.MsgType]int{}
	total := 0
	for _, node := range []string{"node1", "node2", "node3"} {
		evs := readTrace(t, node)
		nextCount := map[key]uint64{}
		syncEpoch := map[key]dfsm.Epoch{} // last SYNC_START seen by a process, per group
		for _, ev := range evs {
			if ev.Ev != "send" && ev.Ev != "deliver" {
				continue
			}
			total++
			m, err := dfsm.Decode(ev.Bytes)
			if err != nil {
				t.Fatalf("%s seq %d: %v", node, ev.Seq, err)
			}
			if re := m.Encode(); !bytes.Equal(re, ev.Bytes) {
				t.Fatalf("%s seq %d: re-encoding differs", node, ev.Seq)
			}
			if m.ProtocolVersion != groupVersion(ev.Group) || m.Reserved != 0 || m.Type > dfsm.MsgVerify {
				t.Errorf("%s seq %d: header %+v in %s", node, ev.Seq, m.Header, ev.Group)
			}
			k := key{ev.Proc, ev.Group}
			if ev.Ev == "send" {
				if perType[ev.Group] == nil {
					perType[ev.Group] = map[dfsm.MsgType]int{}
				}
				perType[ev.Group][m.Type]++
				want := dfsm.StateHeaderLen
				if m.IsNormal() {
					want = dfsm.NormalHeaderLen
					nextCount[k]++
					if m.Count != nextCount[k] {
						t.Errorf("%s seq %d: count %d, want %d", node, ev.Seq, m.Count, nextCount[k])
					}
				}
				if ev.Iov[0] != want {
					t.Errorf("%s seq %d: header iov %d, want %d", node, ev.Seq, ev.Iov[0], want)
				}
				if int64(m.Time) != ev.RtNs/1e9 {
					t.Errorf("%s seq %d: time %d, clock %d", node, ev.Seq, m.Time, ev.RtNs/1e9)
				}
			}
			if ev.Ev == "deliver" && m.Type == dfsm.MsgSyncStart {
				syncEpoch[k] = m.Epoch
			}
			if !m.IsNormal() && m.Type != dfsm.MsgSyncStart && m.Epoch != syncEpoch[k] {
				t.Errorf("%s seq %d: %s epoch %s, last SYNC_START %s", node, ev.Seq, m.Type, m.Epoch, syncEpoch[k])
			}
		}
	}
	if total != 165+392 {
		t.Errorf("%d messages, README says 557", total)
	}
	// Send totals per group and type from the README table (the first
	// number of each node's cell is its sends).
	want := map[string]map[dfsm.MsgType]int{
		"pve_dcdb_v1":    {dfsm.MsgNormal: 20 + 10 + 3 + 2 + 12 + 1, dfsm.MsgSyncStart: 7, dfsm.MsgState: 17, dfsm.MsgUpdate: 25, dfsm.MsgUpdateComplete: 7},
		"pve_kvstore_v1": {dfsm.MsgNormal: 17 + 13 + 5 + 2, dfsm.MsgSyncStart: 7, dfsm.MsgState: 17},
	}
	for g, w := range want {
		for ty, n := range w {
			if perType[g][ty] != n {
				t.Errorf("%s %s: %d sends, want %d", g, ty, perType[g][ty], n)
			}
		}
	}
}

// replayApp stands in for DCDB and KVSTORE when replaying node3: its states
// are the ones node3 sent (the engine decides when to send them, and with
// which header), its leader choice is DCDB's rule on the index header, and
// its KVSTORE synced callback broadcasts nodeip like status.c.
type replayApp struct {
	engine *dfsm.DFSM
	kv     bool
	states [][]byte // node3's STATE payloads of this group, in order
}

func (a *replayApp) Deliver(dfsm.Member, uint16, uint32, []byte) (int, error) { return 0, nil }
func (a *replayApp) Confchg([]dfsm.Member)                                    {}
func (a *replayApp) ProcessUpdate(*dfsm.SyncInfo, dfsm.Member, []byte) error  { return nil }
func (a *replayApp) Commit(*dfsm.SyncInfo) error                              { return nil }
func (a *replayApp) Cleanup(*dfsm.SyncInfo)                                   {}

func (a *replayApp) GetState() ([]byte, error) {
	if len(a.states) == 0 {
		return nil, nil
	}
	s := a.states[0]
	a.states = a.states[1:]
	return s, nil
}

func (a *replayApp) ProcessStateUpdate(si *dfsm.SyncInfo) error {
	if a.kv {
		for i := range si.Nodes {
			si.Nodes[i].Synced = true
		}
		return nil
	}
	leader := 0
	for i, n := range si.Nodes {
		l := si.Nodes[leader].State
		v, lv := le.Uint64(n.State), le.Uint64(l)
		if v > lv || (v == lv && le.Uint32(n.State[20:]) > le.Uint32(l[20:])) {
			leader = i
		}
	}
	for i := range si.Nodes {
		si.Nodes[i].Synced = i == leader || bytes.Equal(si.Nodes[i].State, si.Nodes[leader].State)
	}
	return nil
}

func (a *replayApp) Synced() {
	if !a.kv {
		return
	}
	payload := make([]byte, 256, 256+10)
	copy(payload, "nodeip")
	payload = append(payload, "10.94.0.3\x00"...)
	if err := a.engine.Send(1, payload); err != nil {
		panic(err)
	}
}

type replayTransport struct {
	group string
	sent  *[]replaySend
}

type replaySend struct {
	group string
	data  []byte
}

func (tr replayTransport) Mcast(b []byte) error {
	*tr.sent = append(*tr.sent, replaySend{tr.group, append([]byte(nil), b...)})
	return nil
}
func (replayTransport) Join() error  { return nil }
func (replayTransport) Leave() error { return nil }

// TestTraceReplayNode3 feeds node3's confchgs and deliveries, both groups
// interleaved as recorded, into two engines and compares what they send with
// node3's 13 recorded sends, byte for byte except the header time and the
// KVSTORE key field after the key's NUL (uninitialised upstream).
func TestTraceReplayNode3(t *testing.T) {
	evs := readTrace(t, "node3")
	self := dfsm.Member{NodeID: 3, PID: 24176}
	var sent []replaySend
	var want []traceEvent
	engines := map[string]*dfsm.DFSM{}
	clock := &dfsmtest.FakeClock{}
	modes := map[string][]dfsm.Mode{}
	for _, g := range []string{"pve_dcdb_v1", "pve_kvstore_v1"} {
		app := &replayApp{kv: g == "pve_kvstore_v1"}
		for _, ev := range evs {
			if ev.Ev == "send" && ev.Group == g {
				if m, _ := dfsm.Decode(ev.Bytes); m.Type == dfsm.MsgState {
					app.states = append(app.states, m.Payload)
				}
			}
		}
		g := g
		e, err := dfsm.New(dfsm.Config{Name: g, ProtocolVersion: groupVersion(g), Self: self, App: app,
			Transport: replayTransport{g, &sent}, Clock: clock, Log: quietLogger(),
			OnModeChange: func(_, to dfsm.Mode) { modes[g] = append(modes[g], to) }})
		if err != nil {
			t.Fatal(err)
		}
		app.engine = e
		if err := e.Start(); err != nil {
			t.Fatal(err)
		}
		engines[g] = e
	}
	for _, ev := range evs {
		clock.T = ev.RtNs / 1e9
		switch ev.Ev {
		case "confchg":
			engines[ev.Group].Confchg(members(ev.Members), members(ev.Left), members(ev.Joined))
		case "deliver":
			engines[ev.Group].Deliver(ev.NodeID, ev.PID, ev.Bytes)
		case "send":
			want = append(want, ev)
		}
	}
	if len(sent) != len(want) {
		t.Errorf("engine sent %d messages, node3 sent %d", len(sent), len(want))
	}
	for i := 0; i < len(sent) && i < len(want); i++ {
		got, exp := sent[i].data, want[i].Bytes
		if sent[i].group != want[i].Group || len(got) != len(exp) {
			t.Errorf("send %d (seq %d): got %d bytes to %s, want %d to %s", i, want[i].Seq, len(got), sent[i].group, len(exp), want[i].Group)
			continue
		}
		g, w := append([]byte(nil), got...), append([]byte(nil), exp...)
		for _, b := range [][]byte{g, w} {
			copy(b[8:12], make([]byte, 4)) // header time: the sender's clock
			if m, _ := dfsm.Decode(b); m.IsNormal() && m.Subtype == 1 && sent[i].group == "pve_kvstore_v1" {
				k := dfsm.NormalHeaderLen + bytes.IndexByte(m.Payload, 0) + 1
				copy(b[k:dfsm.NormalHeaderLen+256], make([]byte, 256))
			}
		}
		if !bytes.Equal(g, w) {
			t.Errorf("send %d (seq %d) differs:\n got %x\nwant %x", i, want[i].Seq, g, w)
		}
	}
	wantModes := map[string][]dfsm.Mode{
		// (START is the initial mode, not a change.) Alone: SYNCED; merge (step e, behind the leader):
		// START_SYNC, UPDATE, SYNCED; partition (f1): stays SYNCED; heal
		// (f3, stale): START_SYNC, UPDATE, SYNCED; node2 leaves (g1) and
		// comes back (g2), indexes equal: START_SYNC, SYNCED twice.
		"pve_dcdb_v1": {dfsm.ModeSynced, dfsm.ModeStartSync, dfsm.ModeUpdate, dfsm.ModeSynced,
			dfsm.ModeStartSync, dfsm.ModeUpdate, dfsm.ModeSynced, dfsm.ModeStartSync, dfsm.ModeSynced, dfsm.ModeStartSync, dfsm.ModeSynced},
		// KVSTORE: every member synced at once after each STATE round.
		"pve_kvstore_v1": {dfsm.ModeSynced, dfsm.ModeStartSync, dfsm.ModeSynced,
			dfsm.ModeStartSync, dfsm.ModeSynced, dfsm.ModeStartSync, dfsm.ModeSynced, dfsm.ModeStartSync, dfsm.ModeSynced},
	}
	for g, w := range wantModes {
		if !slices.Equal(modes[g], w) {
			t.Errorf("%s modes %v, want %v", g, modes[g], w)
		}
	}
}

// TestTraceReplayAll replays every process of the three traces. What the
// applications sent on their own (NORMAL messages from FUSE and IPC work,
// the leader's UPDATEs and UPDATE_COMPLETE) is injected at its recorded
// position through the engine's send API, which supplies the header (count,
// epoch); what the engine sends by itself (SYNC_START with the epoch it
// creates, STATE) must appear. Every send is compared byte for byte except
// the header time, per group and in order.
func TestTraceReplayAll(t *testing.T) {
	for _, tc := range []struct {
		node string
		pid  uint32
	}{{"node1", 15531}, {"node2", 15586}, {"node2", 26597}, {"node3", 24176}} {
		t.Run(fmt.Sprintf("%s/%d", tc.node, tc.pid), func(t *testing.T) {
			replayProcess(t, tc.node, tc.pid)
		})
	}
}

func replayProcess(t *testing.T, node string, pid uint32) {
	var evs []traceEvent
	for _, ev := range readTrace(t, node) {
		if ev.Proc == pid {
			evs = append(evs, ev)
		}
	}
	var nodeid uint32
	for _, ev := range evs {
		if ev.Ev == "local" {
			nodeid = ev.NodeID
		}
	}
	self := dfsm.Member{NodeID: nodeid, PID: pid}
	clock := &dfsmtest.FakeClock{}
	var sent []replaySend
	engines := map[string]*dfsm.DFSM{}
	wantSends := map[string][][]byte{}
	for _, g := range []string{"pve_dcdb_v1", "pve_kvstore_v1"} {
		app := &replayApp{kv: g == "pve_kvstore_v1"}
		for _, ev := range evs {
			if ev.Ev == "send" && ev.Group == g {
				if m, _ := dfsm.Decode(ev.Bytes); m.Type == dfsm.MsgState {
					app.states = append(app.states, m.Payload)
				}
			}
		}
		e, err := dfsm.New(dfsm.Config{Name: g, ProtocolVersion: groupVersion(g), Self: self,
			App: quietSynced{app}, Transport: replayTransport{g, &sent}, Clock: clock, Log: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		app.engine = e
		if err := e.Start(); err != nil {
			t.Fatal(err)
		}
		engines[g] = e
	}
	for _, ev := range evs {
		clock.T = ev.RtNs / 1e9
		e := engines[ev.Group]
		switch ev.Ev {
		case "confchg":
			e.Confchg(members(ev.Members), members(ev.Left), members(ev.Joined))
		case "deliver":
			e.Deliver(ev.NodeID, ev.PID, ev.Bytes)
		case "send":
			wantSends[ev.Group] = append(wantSends[ev.Group], ev.Bytes)
			m, _ := dfsm.Decode(ev.Bytes)
			var err error
			switch m.Type {
			case dfsm.MsgNormal:
				err = e.Send(m.Subtype, m.Payload)
			case dfsm.MsgUpdate:
				err = e.SendUpdate(m.Payload)
			case dfsm.MsgUpdateComplete:
				err = e.SendUpdateComplete()
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	gotSends := map[string][][]byte{}
	for _, s := range sent {
		gotSends[s.group] = append(gotSends[s.group], s.data)
	}
	for g, want := range wantSends {
		got := gotSends[g]
		if len(got) != len(want) {
			t.Errorf("%s: %d sends, upstream %d", g, len(got), len(want))
		}
		for i := 0; i < len(got) && i < len(want); i++ {
			a, b := append([]byte(nil), got[i]...), append([]byte(nil), want[i]...)
			if len(a) >= 12 && len(b) >= 12 {
				copy(a[8:12], b[8:12])
			}
			if !bytes.Equal(a, b) {
				ma, _ := dfsm.Decode(a)
				mb, _ := dfsm.Decode(b)
				t.Errorf("%s send %d: got %s #%d e=%s, upstream %s #%d e=%s", g, i, ma.Type, ma.Count, ma.Epoch, mb.Type, mb.Count, mb.Epoch)
			}
		}
	}
}

// quietSynced hides the replay app's own synced broadcast: in the full replay
// that send is injected from the recording.
type quietSynced struct{ *replayApp }

func (quietSynced) Synced() {}
