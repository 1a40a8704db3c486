package dcdb

import (
	"bytes"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/dfsm"
	"github.com/pmxcfs-go/pmxcfs/dfsm/dfsmtest"
	"github.com/pmxcfs-go/pmxcfs/internal/wiretrace"
	"github.com/pmxcfs-go/pmxcfs/memdb"
)

// The upstream 9.1.6 wire traces (see their README) are the oracle here.
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

func quietLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func readTrace(t *testing.T, node string) []traceEvent { return wiretrace.Read(t, node, GroupName) }

// TestTraceCodecs decodes every DCDB payload upstream sent or received and
// re-encodes it byte for byte.
func TestTraceCodecs(t *testing.T) {
	counts := map[string]int{}
	for _, node := range []string{"node1", "node2", "node3"} {
		for _, ev := range readTrace(t, node) {
			if ev.Ev != "send" && ev.Ev != "deliver" {
				continue
			}
			m, err := dfsm.Decode(ev.Bytes)
			if err != nil {
				t.Fatalf("%s seq %d: %v", node, ev.Seq, err)
			}
			var re []byte
			switch {
			case m.Type == dfsm.MsgNormal && m.Subtype >= MsgWrite && m.Subtype <= MsgMtime:
				fm, err := DecodeFuse(m.Payload)
				if err != nil {
					t.Fatalf("%s seq %d: %v", node, ev.Seq, err)
				}
				re = fm.Encode()
				counts["fuse"]++
			case m.Type == dfsm.MsgUpdate:
				r, err := DecodeRecord(m.Payload)
				if err != nil {
					t.Fatalf("%s seq %d: %v", node, ev.Seq, err)
				}
				re = EncodeRecord(&r)
				counts["update"]++
			case m.Type == dfsm.MsgState:
				if _, err := memdb.ParseIndex(m.Payload); err != nil {
					t.Fatalf("%s seq %d: %v", node, ev.Seq, err)
				}
				re = m.Payload
				counts["state"]++
			default:
				continue
			}
			if !bytes.Equal(re, m.Payload) {
				t.Fatalf("%s seq %d: re-encoding differs\n got %x\nwant %x", node, ev.Seq, re, m.Payload)
			}
		}
	}
	// README table: 74 NORMAL deliveries + 23 sends on node1.. just require
	// that every kind was seen.
	for _, k := range []string{"fuse", "update", "state"} {
		if counts[k] == 0 {
			t.Errorf("no %s payload in the traces", k)
		}
	}
}

type recordingTransport struct{ sent *[][]byte }

func (tr recordingTransport) Mcast(b []byte) error {
	*tr.sent = append(*tr.sent, append([]byte(nil), b...))
	return nil
}
func (recordingTransport) Join() error  { return nil }
func (recordingTransport) Leave() error { return nil }

// updateRounds splits a list of DCDB messages into the sets of UPDATE
// payloads sent before each UPDATE_COMPLETE.
func updateRounds(t *testing.T, msgs [][]byte) [][]string {
	var rounds [][]string
	var cur []string
	for _, b := range msgs {
		m, err := dfsm.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		switch m.Type {
		case dfsm.MsgUpdate:
			cur = append(cur, hex.EncodeToString(m.Payload))
		case dfsm.MsgUpdateComplete:
			sort.Strings(cur)
			rounds = append(rounds, cur)
			cur = nil
		}
	}
	return rounds
}

// TestTraceReplay feeds one upstream process's DCDB input (membership changes,
// deliveries, and its local writes as sends) into our engine and App over a
// fresh memdb. The final index must equal the one of that node's final
// config.db, and the UPDATEs our leader sends must be upstream's, as sets.
func TestTraceReplay(t *testing.T) {
	for _, tc := range []struct {
		node string
		pid  uint32
	}{{"node1", 15531}, {"node3", 24176}} {
		t.Run(tc.node, func(t *testing.T) {
			evs := readTrace(t, tc.node)
			dbFile := filepath.Join(wiretrace.Dir(t), "config-"+tc.node+".db")
			want := openCopy(t, dbFile)
			db, err := memdb.Open(filepath.Join(t.TempDir(), "config.db"), memdb.Options{Log: quietEntry()})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			// The send lines carry no nodeid; it is the digit of the node name.
			nodeid := uint32(tc.node[4] - '0')
			var sent [][]byte
			clock := &dfsmtest.FakeClock{}
			app := New(Config{DB: db, Log: quietLogger()})
			e, err := dfsm.New(dfsm.Config{Name: GroupName, ProtocolVersion: ProtocolVersion,
				Self: dfsm.Member{NodeID: nodeid, PID: tc.pid}, App: app,
				Transport: recordingTransport{&sent}, Clock: clock, Log: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			app.Attach(e)
			if err := e.Start(); err != nil {
				t.Fatal(err)
			}
			var upstreamSent [][]byte
			for _, ev := range evs {
				if ev.Proc != tc.pid {
					continue
				}
				clock.T = ev.RtNs / 1e9
				switch ev.Ev {
				case "confchg":
					e.Confchg(toMembers(ev.Members), toMembers(ev.Left), toMembers(ev.Joined))
				case "deliver":
					e.Deliver(ev.NodeID, ev.PID, ev.Bytes)
				case "send":
					upstreamSent = append(upstreamSent, ev.Bytes)
					m, _ := dfsm.Decode(ev.Bytes)
					if m.Type == dfsm.MsgNormal {
						// A local FUSE operation: send it as upstream did.
						if err := e.Send(m.Subtype, m.Payload); err != nil {
							t.Fatal(err)
						}
					}
				}
				if e.Mode().IsError() {
					t.Fatalf("seq %d: engine in mode %s", ev.Seq, e.Mode())
				}
			}
			if got, exp := db.Index(), want.Index(); !bytes.Equal(got, exp) {
				t.Errorf("final index differs from %s:\n got %x\nwant %x", dbFile, got, exp)
			}
			if got, exp := db.TreeChecksum(), want.TreeChecksum(); got != exp {
				t.Errorf("final tree checksum differs")
			}
			gotRounds, wantRounds := updateRounds(t, sent), updateRounds(t, upstreamSent)
			if len(gotRounds) != len(wantRounds) {
				t.Fatalf("%d update rounds led, upstream %d", len(gotRounds), len(wantRounds))
			}
			total := 0
			for i := range gotRounds {
				total += len(wantRounds[i])
				if len(gotRounds[i]) != len(wantRounds[i]) {
					t.Errorf("round %d: %d updates, upstream %d", i, len(gotRounds[i]), len(wantRounds[i]))
					continue
				}
				for j := range gotRounds[i] {
					if gotRounds[i][j] != wantRounds[i][j] {
						t.Errorf("round %d: update differs:\n got %s\nwant %s", i, gotRounds[i][j], wantRounds[i][j])
					}
				}
			}
			t.Logf("%d rounds led, %d updates compared", len(gotRounds), total)
		})
	}
}

func quietEntry() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// openCopy opens a copy of a fixture database (Open may write to it).
func openCopy(t *testing.T, src string) *memdb.DB {
	t.Helper()
	data, err := os.ReadFile(src)
	if os.IsNotExist(err) {
		t.Skipf("fixture absent: %s", src)
	}
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "fixture.db")
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := memdb.Open(dst, memdb.Options{Log: quietEntry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
