package dfsm_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/pmxcfs-go/pmxcfs/dfsm"
)

// kvApp is the trivial replicated application of the tests: a key/value map
// with a version that counts applied writes, modelled on DCDB. Its state is
// the text "v=N;k=v;..." with sorted keys. The leader is the member with the
// highest version, the first in (nodeid, pid) order on a tie; a member whose
// state equals the leader's is synced. The leader sends one UPDATE "k=v" per
// key some unsynced member lacks or has with another value; deletions are
// not sent, the receiver derives them from the leader's state, and checks
// the result byte for byte on commit.
type kvApp struct {
	self    dfsm.Member
	engine  *dfsm.DFSM
	version uint64
	data    map[string]string
	trace   func(string)
	// quorate, if set, is checked on delivery like DCDB does: a write
	// arriving without quorum fails and forces a resync.
	quorate func() bool
	applied []string // every applied write, in order: "from#count k=v"
}

const (
	kvSet  = 1 // payload "k=v"; an empty value deletes
	kvFail = 2 // applied as a failing operation: result -EINVAL, no change
)

type kvSync struct {
	leader  map[string]string
	version uint64
	raw     []byte
	updates []string
}

func newKVApp(trace func(string)) *kvApp {
	return &kvApp{data: map[string]string{}, trace: trace}
}

func (a *kvApp) log(format string, args ...any) {
	if a.trace != nil {
		a.trace(a.self.String() + " " + fmt.Sprintf(format, args...))
	}
}

func encodeKV(version uint64, data map[string]string) []byte {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	fmt.Fprintf(&b, "v=%d", version)
	for _, k := range keys {
		fmt.Fprintf(&b, ";%s=%s", k, data[k])
	}
	return b.Bytes()
}

func decodeKV(b []byte) (uint64, map[string]string, error) {
	parts := strings.Split(string(b), ";")
	if !strings.HasPrefix(parts[0], "v=") {
		return 0, nil, errors.New("kv state without version")
	}
	v, err := strconv.ParseUint(parts[0][2:], 10, 64)
	if err != nil {
		return 0, nil, err
	}
	m := map[string]string{}
	for _, p := range parts[1:] {
		k, val, ok := strings.Cut(p, "=")
		if !ok {
			return 0, nil, fmt.Errorf("bad kv entry %q", p)
		}
		m[k] = val
	}
	return v, m, nil
}

func (a *kvApp) State() []byte { return encodeKV(a.version, a.data) }

func (a *kvApp) Deliver(from dfsm.Member, subtype uint16, _ uint32, payload []byte) (int, error) {
	if a.quorate != nil && !a.quorate() {
		a.log("write while not quorate - trigger resync")
		return -int(syscall.EACCES), errors.New("not quorate")
	}
	switch subtype {
	case kvSet:
		k, v, ok := strings.Cut(string(payload), "=")
		if !ok || k == "" {
			return -int(syscall.EINVAL), nil
		}
		if v == "" {
			delete(a.data, k)
		} else {
			a.data[k] = v
		}
		a.version++
		a.applied = append(a.applied, fmt.Sprintf("%s %s", from, payload))
		a.log("apply %s from %s -> %d", payload, from, a.version)
		return int(a.version), nil
	case kvFail:
		a.log("apply fail from %s -> -EINVAL", from)
		return -int(syscall.EINVAL), nil
	}
	return 0, fmt.Errorf("unknown message subtype %d", subtype)
}

func (a *kvApp) Confchg([]dfsm.Member) {}

func (a *kvApp) GetState() ([]byte, error) { return a.State(), nil }

func (a *kvApp) ProcessStateUpdate(si *dfsm.SyncInfo) error {
	versions := make([]uint64, len(si.Nodes))
	states := make([]map[string]string, len(si.Nodes))
	leader := -1
	for i, n := range si.Nodes {
		v, m, err := decodeKV(n.State)
		if err != nil {
			return err
		}
		versions[i], states[i] = v, m
		if leader < 0 || v > versions[leader] {
			leader = i
		}
	}
	var synced []string
	for i := range si.Nodes {
		n := &si.Nodes[i]
		n.Synced = i == leader || bytes.Equal(n.State, si.Nodes[leader].State)
		if n.Synced {
			synced = append(synced, n.Member.String())
		}
	}
	si.Data = &kvSync{leader: states[leader], version: versions[leader], raw: si.Nodes[leader].State}
	a.log("leader %s synced %s", si.Nodes[leader].Member, strings.Join(synced, ","))
	if si.Nodes[leader].Member != a.self {
		return nil
	}
	send := map[string]bool{}
	for i, n := range si.Nodes {
		if n.Synced {
			continue
		}
		for k, v := range states[leader] {
			if ov, ok := states[i][k]; !ok || ov != v {
				send[k] = true
			}
		}
	}
	keys := make([]string, 0, len(send))
	for k := range send {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := a.engine.SendUpdate([]byte(k + "=" + states[leader][k])); err != nil {
			return err
		}
	}
	return a.engine.SendUpdateComplete()
}

func (a *kvApp) ProcessUpdate(si *dfsm.SyncInfo, from dfsm.Member, payload []byte) error {
	k, _, ok := strings.Cut(string(payload), "=")
	if !ok || k == "" {
		return fmt.Errorf("bad update %q", payload)
	}
	s := si.Data.(*kvSync)
	s.updates = append(s.updates, string(payload))
	return nil
}

func (a *kvApp) Commit(si *dfsm.SyncInfo) error {
	s := si.Data.(*kvSync)
	data := map[string]string{}
	for k, v := range a.data {
		if _, ok := s.leader[k]; ok {
			data[k] = v
		}
	}
	for _, u := range s.updates {
		k, v, _ := strings.Cut(u, "=")
		data[k] = v
	}
	if got := encodeKV(s.version, data); !bytes.Equal(got, s.raw) {
		a.log("commit mismatch %q != %q", got, s.raw)
		return errors.New("new state does not match the leader's")
	}
	a.data, a.version = data, s.version
	a.log("commit %d updates -> %s", len(s.updates), a.State())
	return nil
}

func (a *kvApp) Cleanup(si *dfsm.SyncInfo) {}

func (a *kvApp) Synced() { a.log("synced callback") }

func (a *kvApp) Checksum() ([dfsm.ChecksumLen]byte, error) { return sha256.Sum256(a.State()), nil }
