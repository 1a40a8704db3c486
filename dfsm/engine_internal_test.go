package dfsm

import (
	"io"
	"testing"

	"github.com/sirupsen/logrus"
)

// The tests of the engine's internals; those driving engines through the simulator of
// package dfsmtest are in package dfsm_test.

var discard = &logrus.Logger{Out: io.Discard, Formatter: new(logrus.TextFormatter), Level: logrus.PanicLevel}

func TestErrorModesOnlyEscalate(t *testing.T) {
	d, err := New(Config{App: nopApp{}, Transport: nopTransport{}, Log: discard})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct{ set, want Mode }{
		{ModeSynced, ModeSynced}, {ModeError, ModeError}, {ModeLeave, ModeError},
		{ModeVersionError, ModeError}, {ModeStart, ModeStart}, {ModeVersionError, ModeVersionError},
		{ModeLeave, ModeVersionError}, {ModeError, ModeError},
	}
	for i, s := range steps {
		d.setMode(s.set)
		if got := d.Mode(); got != s.want {
			t.Fatalf("step %d: set %s, mode %s, want %s", i, s.set, got, s.want)
		}
	}
	if d.Restartable() {
		t.Fatal("ERROR must not be restartable")
	}
	if err := d.Start(); err == nil {
		t.Fatal("Start after ERROR must fail")
	}
}

// The msg_queue is ordered by count only, equal counts in arrival order,
// through upstream's comparator (u64 difference truncated to a C int).
func TestQueueOrder(t *testing.T) {
	d, _ := New(Config{App: nopApp{}, Transport: nopTransport{}, Log: discard, Self: Member{1, 1}})
	d.releaseSyncResources([]Member{{1, 1}, {2, 2}, {3, 3}})
	d.setMode(ModeStartSync)
	in := []struct {
		from  Member
		count uint64
	}{{Member{2, 2}, 5}, {Member{3, 3}, 1}, {Member{1, 1}, 5}, {Member{2, 2}, 6}, {Member{1, 1}, 1}, {Member{3, 3}, 2}}
	for _, m := range in {
		if !d.queueMessage(m.from, m.count, []byte{byte(m.from.NodeID)}) {
			t.Fatal("queue refused a member")
		}
	}
	want := []string{"3/3#1", "1/1#1", "3/3#2", "2/2#5", "1/1#5", "2/2#6"}
	for i, q := range d.msgQueue {
		if got := q.from.String() + "#" + string(rune('0'+q.count)); got != want[i] {
			t.Fatalf("position %d: %s, want %s", i, got, want[i])
		}
	}
	if queueCmp(1<<32+1, 1) != 0 {
		t.Fatal("comparator must truncate like upstream")
	}
	if d.queueMessage(Member{9, 9}, 1, []byte{1}) {
		t.Fatal("a non-member's message must be refused")
	}
}

type nopTransport struct{}

func (nopTransport) Mcast([]byte) error { return nil }
func (nopTransport) Join() error        { return nil }
func (nopTransport) Leave() error       { return nil }

type nopApp struct{}

func (nopApp) Deliver(Member, uint16, uint32, []byte) (int, error) { return 0, nil }
func (nopApp) Confchg([]Member)                                    {}
func (nopApp) GetState() ([]byte, error)                           { return []byte{0}, nil }
func (nopApp) ProcessStateUpdate(*SyncInfo) error                  { return nil }
func (nopApp) ProcessUpdate(*SyncInfo, Member, []byte) error       { return nil }
func (nopApp) Commit(*SyncInfo) error                              { return nil }
func (nopApp) Cleanup(*SyncInfo)                                   {}
func (nopApp) Synced()                                             {}
