package kvstore

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/clusterlog"
	"github.com/pmxcfs-go/pmxcfs/dfsm"
	"github.com/pmxcfs-go/pmxcfs/dfsm/dfsmtest"
	"github.com/pmxcfs-go/pmxcfs/internal/wiretrace"
	"github.com/pmxcfs-go/pmxcfs/status"
)

// The CPG traces of three upstream 9.1.6 daemons (see their README) are the
// oracle here.
type (
	traceEvent  = wiretrace.Event
	traceMember = wiretrace.Member
)

func toMembers(ms []traceMember) []dfsm.Member {
	out := make([]dfsm.Member, len(ms))
	for i, m := range ms {
		out[i] = dfsm.Member{NodeID: m.NodeID, PID: m.PID}
	}
	return out
}

func readTrace(t *testing.T, node string) []traceEvent { return wiretrace.Read(t, node, GroupName) }

// maskMessage zeroes the bytes upstream leaves undetermined (README "Bytes to
// mask"): the header time, the key field after the key's NUL in UPDATEs, the
// last 4 bytes of a LOG entry and of every entry in a STATE ring.
func maskMessage(t *testing.T, b []byte) []byte {
	t.Helper()
	b = append([]byte(nil), b...)
	m, err := dfsm.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b[8:12])
	p := m.Payload
	switch {
	case m.Type == dfsm.MsgNormal && m.Subtype == MsgUpdate && len(p) >= KeyFieldLen:
		if n := bytes.IndexByte(p[:KeyFieldLen], 0); n >= 0 {
			clear(p[n:KeyFieldLen])
		}
	case m.Type == dfsm.MsgNormal && m.Subtype == MsgLog && len(p) >= 4:
		clear(p[len(p)-4:])
	case m.Type == dfsm.MsgState:
		maskRingTails(p)
	}
	return b
}

func maskRingTails(r []byte) {
	le := binary.LittleEndian
	if len(r) < 8 {
		return
	}
	pos := le.Uint32(r[4:])
	for steps := 0; pos != 0 && int(pos)+clusterlog.EntryDataOffset <= len(r) && steps < len(r)/48; steps++ {
		e := r[pos:]
		end := clusterlog.EntryDataOffset + int(e[37]) + int(e[38]) + int(e[39]) + int(le.Uint32(e[40:]))
		if end+4 > len(e) {
			return
		}
		clear(e[end : end+4])
		pos = le.Uint32(e)
	}
}

// TestTraceCodecs decodes every UPDATE and LOG payload upstream sent or
// received and re-encodes it byte for byte (masked bytes excepted).
func TestTraceCodecs(t *testing.T) {
	counts := map[uint16]int{}
	for _, node := range []string{"node1", "node2", "node3"} {
		for _, ev := range readTrace(t, node) {
			if ev.Ev != "send" && ev.Ev != "deliver" {
				continue
			}
			m, err := dfsm.Decode(ev.Bytes)
			if err != nil {
				t.Fatalf("%s seq %d: %v", node, ev.Seq, err)
			}
			if m.Type != dfsm.MsgNormal {
				continue
			}
			var re []byte
			switch m.Subtype {
			case MsgUpdate:
				key, value, err := DecodeUpdate(m.Payload)
				if err != nil {
					t.Fatalf("%s seq %d: %v", node, ev.Seq, err)
				}
				re = EncodeUpdate(key, value)
			case MsgLog:
				e, err := clusterlog.Unmarshal(m.Payload)
				if err != nil {
					t.Fatalf("%s seq %d: %v", node, ev.Seq, err)
				}
				if re, err = e.Marshal(); err != nil {
					t.Fatal(err)
				}
			default:
				t.Fatalf("%s seq %d: unexpected subtype %d", node, ev.Seq, m.Subtype)
			}
			counts[m.Subtype]++
			m.Payload = re
			got, want := maskMessage(t, m.Encode()), maskMessage(t, ev.Bytes)
			if !bytes.Equal(got, want) {
				t.Errorf("%s seq %d: re-encoding differs\n got %x\nwant %x", node, ev.Seq, got, want)
			}
		}
	}
	// README: 117 UPDATE and 6 LOG send/deliver events.
	if counts[MsgUpdate] != 117 || counts[MsgLog] != 6 {
		t.Errorf("decoded %d UPDATEs and %d LOGs, README says 117 and 6", counts[MsgUpdate], counts[MsgLog])
	}
}

type recordingTransport struct{ sent *[][]byte }

func (tr recordingTransport) Mcast(b []byte) error {
	*tr.sent = append(*tr.sent, append([]byte(nil), b...))
	return nil
}
func (recordingTransport) Join() error  { return nil }
func (recordingTransport) Leave() error { return nil }

// TestTraceReplayNode3 feeds node3's KVSTORE input into our engine and App
// with the initial state the README gives. What we send must be what
// upstream sent, and the resulting cluster log and status what upstream had.
func TestTraceReplayNode3(t *testing.T) {
	evs := readTrace(t, "node3")
	wantLog, err := os.ReadFile(filepath.Join(wiretrace.Dir(t), "clusterlog.json"))
	if err != nil {
		t.Fatal(err)
	}
	const pid = 24176
	quiet := quietLogger()
	st := status.New(status.Options{NodeName: "node3", NodeIP: "10.94.0.3", PID: pid,
		Now: func() time.Time { return time.Unix(1795349881, 0) }, Log: logrus.NewEntry(quiet)})
	st.SetClusterInfo("testcluster", 1, cmapNodes)
	app := New(Config{Status: st, Log: quiet})
	var sent [][]byte
	e, err := dfsm.New(dfsm.Config{Name: GroupName, ProtocolVersion: ProtocolVersion,
		Self: dfsm.Member{NodeID: 3, PID: pid}, App: app, Transport: recordingTransport{&sent},
		Clock: &dfsmtest.FakeClock{T: 1795349881}, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	app.Attach(e)
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	var wantSeq []int
	for _, ev := range evs {
		if (ev.Ev == "confchg" || ev.Ev == "deliver") && len(sent) != len(want) {
			// Upstream's sends caused by the previous inputs are recorded
			// before its next input.
			t.Fatalf("seq %d: we sent %d messages, upstream %d", ev.Seq, len(sent), len(want))
		}
		switch ev.Ev {
		case "confchg":
			e.Confchg(toMembers(ev.Members), toMembers(ev.Left), toMembers(ev.Joined))
		case "deliver":
			e.Deliver(ev.NodeID, ev.PID, ev.Bytes)
		case "send":
			want = append(want, ev.Bytes)
			wantSeq = append(wantSeq, ev.Seq)
		}
		if e.Mode().IsError() {
			t.Fatalf("seq %d: engine in mode %s", ev.Seq, e.Mode())
		}
	}
	if len(sent) != len(want) {
		t.Fatalf("sent %d messages, upstream %d (seq %v)", len(sent), len(want), wantSeq)
	}
	for i := range want {
		if got, exp := maskMessage(t, sent[i]), maskMessage(t, want[i]); !bytes.Equal(got, exp) {
			t.Errorf("send %d (upstream seq %d) differs:\n got %.200x\nwant %.200x", i, wantSeq[i], got, exp)
		}
	}
	if got := st.ClusterLogJSON(); !bytes.Equal(got, wantLog) {
		t.Errorf(".clusterlog differs:\n%s\nwant\n%s", got, wantLog)
	}
	// The values in the last UPDATEs node3 received from each node.
	wantStatus(t, st, "node1", "kv/test", "value-from-node1\x00")
	wantStatus(t, st, "node2", "kv/test", "value-from-node2\x00")
	wantStatus(t, st, "node2", "kv/tmp", "")
	wantStatus(t, st, "", "kv/test", "")
	m := string(st.Members())
	for _, w := range []string{
		`"node1": { "id": 1, "online": 1, "ip": "10.94.0.101"}`,
		`"node2": { "id": 2, "online": 1, "ip": "10.94.0.2"}`,
		`"node3": { "id": 3, "online": 1, "ip": "10.94.0.3"}`,
	} {
		if !strings.Contains(m, w) {
			t.Errorf(".members lacks %s:\n%s", w, m)
		}
	}
}
