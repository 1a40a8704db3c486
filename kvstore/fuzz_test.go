package kvstore

import (
	"bytes"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/clusterlog"
	"github.com/pmxcfs-go/pmxcfs/dfsm"
	"github.com/pmxcfs-go/pmxcfs/status"
)

func FuzzDecodeUpdate(f *testing.F) {
	f.Add(EncodeUpdate("kv/test", []byte("value\x00")))
	f.Add(EncodeUpdate("nodeip", []byte("10.94.0.3\x00")))
	f.Add(bytes.Repeat([]byte{'a'}, KeyFieldLen))
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, p []byte) {
		key, value, err := DecodeUpdate(p)
		if err != nil {
			return
		}
		if len(key) >= KeyFieldLen || bytes.IndexByte([]byte(key), 0) >= 0 {
			t.Fatalf("bad key %q", key)
		}
		want := append([]byte(nil), p...)
		clear(want[len(key):KeyFieldLen])
		if got := EncodeUpdate(key, value); !bytes.Equal(got, want) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", got, want)
		}
	})
}

// FuzzDeliver throws arbitrary payloads from a peer at the App: it must
// neither panic nor make the engine leave.
func FuzzDeliver(f *testing.F) {
	e, _ := clusterlog.Pack(1, "node2", "root", "cluster", 1, 1795349881, 6, "starting cluster log")
	entry, _ := e.Marshal()
	f.Add(MsgLog, entry)
	f.Add(MsgUpdate, EncodeUpdate("rrd/pve2-node/node2", []byte("1:2:3\x00")))
	f.Add(MsgUpdate, EncodeUpdate("nodeip", []byte("x")))
	f.Add(uint16(2), []byte{})
	l := quietLogger()
	st := status.New(status.Options{NodeName: "node1", Log: logrus.NewEntry(l)})
	st.SetClusterInfo("test", 1, cmapNodes)
	a := New(Config{Status: st, Log: l})
	f.Fuzz(func(t *testing.T, subtype uint16, p []byte) {
		res, err := a.Deliver(dfsm.Member{NodeID: 2, PID: 9}, subtype, 0, p)
		if err != nil || (res != 0 && res != -int(syscall.EACCES)) {
			t.Fatalf("result %d, %v", res, err)
		}
	})
}
