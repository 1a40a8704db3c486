package ipc

import (
	"bytes"
	"encoding/binary"
	"io"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/clusterlog"
	"github.com/pmxcfs-go/pmxcfs/memdb"
	"github.com/pmxcfs-go/pmxcfs/qb"
	"github.com/pmxcfs-go/pmxcfs/status"
	"github.com/sirupsen/logrus"
)

var (
	root    = qb.Creds{UID: 0, GID: 0, PID: 4242}
	wwwData = qb.Creds{UID: 33, GID: 33, PID: 4243}
)

type recorder struct {
	keys []string
	logs []clusterlog.Entry
}

func (r *recorder) Broadcast(key string, value []byte) { r.keys = append(r.keys, key) }
func (r *recorder) SendLog(e clusterlog.Entry)         { r.logs = append(r.logs, e) }

// newServer builds a Server on a real memdb and status, with files written
// as path -> content ("" content with a trailing "/" in the path: a directory).
func newServer(t testing.TB, files map[string]string) (*Server, *recorder) {
	t.Helper()
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	log := logrus.NewEntry(quiet)
	st := status.New(status.Options{NodeName: "node1", NodeIP: "192.0.2.1", PID: 1, Now: time.Now, Log: log})
	db, err := memdb.Open(filepath.Join(t.TempDir(), "config.db"), memdb.Options{Observer: st, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st.SetVMList(db)
	st.SetQuorate(true)
	for _, p := range sortedPaths(files) {
		mkParents(t, db, p)
		if strings.HasSuffix(p, "/") {
			continue
		}
		if err := db.Create(p, 0, 1); err != nil {
			t.Fatalf("create %s: %v", p, err)
		}
		if c := files[p]; c != "" {
			if _, err := db.Write(p, 0, []byte(c), false, 0, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	rec := &recorder{}
	return &Server{Status: st, DB: db, Cluster: rec, WWWDataGID: 33, Log: log}, rec
}

func sortedPaths(m map[string]string) []string {
	var ps []string
	for p := range m {
		ps = append(ps, p)
	}
	for i := range ps {
		for j := i + 1; j < len(ps); j++ {
			if ps[j] < ps[i] {
				ps[i], ps[j] = ps[j], ps[i]
			}
		}
	}
	return ps
}

func mkParents(t testing.TB, db *memdb.DB, p string) {
	parts := strings.Split(strings.TrimSuffix(p, "/"), "/")
	n := len(parts) - 1
	if strings.HasSuffix(p, "/") {
		n = len(parts)
	}
	for i := 1; i <= n; i++ {
		d := strings.Join(parts[:i], "/")
		if _, err := db.Lookup(d); err == nil {
			continue
		}
		if err := db.Mkdir(d, 0, 1); err != nil {
			t.Fatalf("mkdir %s: %v", d, err)
		}
	}
}

// request builds a libqb request: 16-byte header (id at 0, size at 8) + payload.
func request(id int32, payload []byte) []byte {
	b := make([]byte, 16, 16+len(payload))
	binary.NativeEndian.PutUint32(b[0:], uint32(id))
	binary.NativeEndian.PutUint32(b[8:], uint32(16+len(payload)))
	return append(b, payload...)
}

// z is Perl's pack "Z[n]": s NUL-padded to n bytes, last byte NUL.
func z(s string, n int) []byte {
	b := make([]byte, n)
	copy(b[:n-1], s)
	return b
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func call(t *testing.T, s *Server, c qb.Creds, id int32, payload []byte) (syscall.Errno, []byte) {
	t.Helper()
	return s.Handle(c, request(id, payload))
}

func TestUnknownOps(t *testing.T) {
	s, _ := newServer(t, nil)
	for _, id := range []int32{0, 9, 14, 99, -1} {
		if e, _ := call(t, s, root, id, nil); e != syscall.ECHRNG || int(syscall.ECHRNG) != 44 {
			t.Errorf("op %d: %v, want ECHRNG (44)", id, e)
		}
	}
}

func TestHeaderOnlyOps(t *testing.T) {
	s, _ := newServer(t, nil)
	for _, id := range []int32{OpGetFSVersion, OpGetClusterInfo, OpGetGuestList, OpGetRRDDump} {
		if e, _ := call(t, s, root, id, []byte{0}); e != syscall.EINVAL {
			t.Errorf("op %d with payload: %v, want EINVAL", id, e)
		}
		e, out := call(t, s, wwwData, id, nil)
		if e != 0 {
			t.Errorf("op %d: %v", id, e)
		}
		want := map[int32][]byte{OpGetFSVersion: s.Status.Version(), OpGetClusterInfo: s.Status.Members(),
			OpGetGuestList: s.Status.VMList(), OpGetRRDDump: s.Status.RRDDump()}[id]
		if id != OpGetFSVersion && !bytes.Equal(out, want) {
			t.Errorf("op %d: %q, want %q", id, out, want)
		}
	}
}

func TestRRDDumpEndsWithNUL(t *testing.T) {
	s, _ := newServer(t, nil)
	val := "1700000000:0.5:1:2:3:4:5:6:7:8:9:10:11:12:13\x00"
	if e, _ := call(t, s, root, OpSetStatus, append(z("rrd/pve2-node/node1", 256), val...)); e != 0 {
		t.Fatalf("set rrd: %v", e)
	}
	_, out := call(t, s, root, OpGetRRDDump, nil)
	if !bytes.HasSuffix(out, []byte("\n\x00")) || !bytes.HasPrefix(out, []byte("pve2-node/node1:")) {
		t.Errorf("rrd dump %q", out)
	}
}

func TestSetGetStatus(t *testing.T) {
	s, rec := newServer(t, nil)
	// Perl: pack "Z[256]Z*" then pack "Z[256]Z[256]"
	if e, out := call(t, s, root, OpSetStatus, append(z("kv/test", 256), "value1\x00"...)); e != 0 || out != nil {
		t.Fatalf("set: %v %q", e, out)
	}
	e, out := call(t, s, wwwData, OpGetStatus, append(z("kv/test", 256), z("", 256)...))
	if e != 0 || string(out) != "value1\x00" {
		t.Fatalf("get: %v %q", e, out)
	}
	if e, out := call(t, s, root, OpGetStatus, append(z("kv/test", 256), z("node1", 256)...)); e != 0 || string(out) != "value1\x00" {
		t.Errorf("get by local name: %v %q", e, out)
	}
	if e, _ := call(t, s, root, OpSetStatus, z("kv/test", 256)); e != 0 {
		t.Fatalf("delete: %v", e)
	}
	if e, _ := call(t, s, root, OpGetStatus, append(z("kv/test", 256), z("", 256)...)); e != syscall.ENOENT {
		t.Errorf("get after delete: %v, want ENOENT", e)
	}
	if e, _ := call(t, s, root, OpGetStatus, append(z("kv/test", 256), z("other", 256)...)); e != syscall.ENOENT {
		t.Errorf("unknown node: %v, want ENOENT", e)
	}
	if e, _ := call(t, s, root, OpSetStatus, append(z("kv/big", 256), make([]byte, 40000)...)); e != syscall.EFBIG {
		t.Errorf("40000-byte value: %v, want EFBIG (27)", e)
	}
	if e, _ := call(t, s, root, OpSetStatus, make([]byte, 255)); e != syscall.EINVAL {
		t.Errorf("short set: %v, want EINVAL", e)
	}
	if e, _ := call(t, s, root, OpGetStatus, make([]byte, 511)); e != syscall.EINVAL {
		t.Errorf("short get: %v, want EINVAL", e)
	}
	if e, _ := call(t, s, wwwData, OpSetStatus, append(z("kv/test", 256), "x\x00"...)); e != syscall.EPERM {
		t.Errorf("www-data set: %v, want EPERM", e)
	}
	if e, _ := call(t, s, qb.Creds{UID: 0, GID: 33}, OpSetStatus, append(z("kv/test", 256), "x\x00"...)); e != syscall.EPERM {
		t.Errorf("root:www-data set: %v, want EPERM", e)
	}
	// set, delete: broadcast; EFBIG: not
	if strings.Join(rec.keys, ",") != "kv/test,kv/test" {
		t.Errorf("broadcasts %q", rec.keys)
	}
	// the name field's last byte is forced to NUL
	long := bytes.Repeat([]byte{'k'}, 256)
	if e, _ := call(t, s, root, OpSetStatus, append(long, "v\x00"...)); e != 0 {
		t.Fatal(e)
	}
	get := append(append([]byte{}, long...), z("", 256)...)
	if e, out := call(t, s, root, OpGetStatus, get); e != 0 || string(out) != "v\x00" {
		t.Errorf("255-byte key: %v %q", e, out)
	}
}

func TestGetConfig(t *testing.T) {
	s, _ := newServer(t, map[string]string{
		"test2.txt":             "hello\n",
		"empty":                 "",
		"dir/":                  "",
		"priv/secret":           "s",
		"nodes/vm/priv/secret":  "node secret",
		"nodes/vm/qemu-server/": "",
		"nodes/vm/public.cfg":   "pub",
	})
	zs := func(p string) []byte { return append([]byte(p), 0) }
	for _, p := range []string{"test2.txt", "/test2.txt"} {
		if e, out := call(t, s, root, OpGetConfig, zs(p)); e != 0 || string(out) != "hello\n" {
			t.Errorf("%s: %v %q", p, e, out)
		}
	}
	if e, out := call(t, s, root, OpGetConfig, zs("empty")); e != 0 || out != nil {
		t.Errorf("empty file: %v %q, want 0 and no data", e, out)
	}
	for _, p := range []string{"missing", "dir"} {
		if e, _ := call(t, s, root, OpGetConfig, zs(p)); e != syscall.ENOENT {
			t.Errorf("%s: %v, want ENOENT", p, e)
		}
	}
	if e, _ := call(t, s, root, OpGetConfig, nil); e != syscall.EINVAL {
		t.Errorf("no path: %v, want EINVAL", e)
	}
	// the last byte is forced to NUL: "test2.txtX" reads test2.txt
	if e, out := call(t, s, root, OpGetConfig, []byte("test2.txtX")); e != 0 || string(out) != "hello\n" {
		t.Errorf("unterminated path: %v %q", e, out)
	}
	for _, p := range []string{"priv/secret", "/priv/secret", "//priv/secret", "priv//secret",
		"nodes/vm/priv/secret", "nodes/vm/priv//secret",
		// upstream leaks these two to www-data (it judges the raw string with
		// cfs-utils.c:path_is_private); we refuse them
		"nodes/vm//priv/secret", "nodes//vm/priv/secret", "/nodes/vm///priv/secret"} {
		if e, _ := call(t, s, wwwData, OpGetConfig, zs(p)); e != syscall.EPERM {
			t.Errorf("www-data %s: %v, want EPERM", p, e)
		}
		if e, _ := call(t, s, root, OpGetConfig, zs(p)); e != 0 {
			t.Errorf("root %s: %v", p, e)
		}
	}
	if e, out := call(t, s, wwwData, OpGetConfig, zs("nodes/vm/public.cfg")); e != 0 || string(out) != "pub" {
		t.Errorf("www-data public: %v %q", e, out)
	}
}

func TestIsPrivate(t *testing.T) {
	for p, want := range map[string]bool{
		"priv": true, "/priv": true, "priv/x": true, "privx": false, "private/x": false,
		"nodes/a/priv": true, "nodes/a/priv/b": true, "nodes/a/privx": false, "nodes/priv": false,
		"nodes//a//priv//b": true, "x/nodes/a/priv": false, "": false, "/": false,
	} {
		if IsPrivate(p) != want {
			t.Errorf("IsPrivate(%q) = %v", p, !want)
		}
	}
}

// logReq is Perl's pack "CCCZ*Z*Z*".
func logReq(prio uint8, ident, tag, msg string) []byte {
	b := []byte{prio, uint8(len(ident) + 1), uint8(len(tag) + 1)}
	b = append(append(b, ident...), 0)
	b = append(append(b, tag...), 0)
	return append(append(b, msg...), 0)
}

func TestLogClusterMsg(t *testing.T) {
	s, rec := newServer(t, nil)
	if e, out := call(t, s, root, OpLogClusterMsg, logReq(6, "root@pam", "test", "hello \"x\"")); e != 0 || out != nil {
		t.Fatalf("log: %v %q", e, out)
	}
	if len(rec.logs) != 1 || rec.logs[0].PID != 4242 || rec.logs[0].Ident != "root@pam" {
		t.Fatalf("sent %+v", rec.logs)
	}
	e, out := call(t, s, root, OpGetClusterLog, append(append(u32(0), make([]byte, 12)...), 0))
	if e != 0 || !bytes.Contains(out, []byte(`"uid": 2,`)) ||
		!bytes.Contains(out, []byte(`"pri": 6, "tag": "test", "pid": 4242, "node": "node1", "user": "root@pam", "msg": "hello \"x\""}`)) {
		t.Errorf("cluster log: %v %q", e, out)
	}
	// user filter
	_, out = call(t, s, wwwData, OpGetClusterLog, append(append(u32(10), make([]byte, 12)...), "nobody@pam\x00"...))
	if string(out) != "{\n\"data\": [\n]\n}\n" {
		t.Errorf("filtered log %q", out)
	}
	if e, _ := call(t, s, root, OpGetClusterLog, make([]byte, 16)); e != syscall.EINVAL {
		t.Errorf("32-byte GET_CLUSTER_LOG: %v, want EINVAL", e)
	}
	bad := logReq(6, "root@pam", "test", "m")
	bad[1]++ // wrong ident length
	if e, _ := call(t, s, root, OpLogClusterMsg, bad); e != syscall.EINVAL {
		t.Errorf("wrong ident length: %v, want EINVAL", e)
	}
	unterminated := logReq(6, "a", "b", "msg")
	unterminated[len(unterminated)-1] = 'x'
	if e, _ := call(t, s, root, OpLogClusterMsg, unterminated); e != syscall.EINVAL {
		t.Errorf("unterminated msg: %v, want EINVAL", e)
	}
	if e, _ := call(t, s, root, OpLogClusterMsg, []byte{6, 2, 2, 'a', 0, 'b', 0}); e != syscall.EINVAL {
		t.Errorf("no msg: %v, want EINVAL", e)
	}
	if e, _ := call(t, s, root, OpLogClusterMsg, []byte{6, 0, 0, 'm', 0}); e != syscall.EINVAL {
		t.Errorf("zero lengths: %v, want EINVAL", e)
	}
	if e, _ := call(t, s, root, OpLogClusterMsg, logReq(8, "a", "b", "not logged")); e != 0 {
		t.Errorf("priority 8: %v, want 0", e)
	}
	if len(rec.logs) != 1 {
		t.Errorf("priority 8 was sent")
	}
	if e, _ := call(t, s, wwwData, OpLogClusterMsg, logReq(6, "a", "b", "c")); e != syscall.EPERM {
		t.Errorf("www-data log: %v, want EPERM", e)
	}
}

func TestVerifyToken(t *testing.T) {
	s, _ := newServer(t, nil)
	tok := func(s string) []byte { return append([]byte(s), 0) }
	if e, _ := call(t, s, wwwData, OpVerifyToken, tok("root@pam!t abc")); e != syscall.ENOENT {
		t.Errorf("no token.cfg: %v, want ENOENT", e)
	}
	s, _ = newServer(t, map[string]string{"priv/token.cfg": "root@pam!a 111\nroot@pam!t abc\nlast 9"})
	for tk, want := range map[string]syscall.Errno{
		"root@pam!t abc": 0, "root@pam!a 111": 0, "last 9": 0,
		"root@pam!t ab": syscall.ENOENT, "root@pam!t abcd": syscall.ENOENT, "": syscall.EINVAL,
		"root@pam!t abc\n": syscall.EINVAL, "a\nb": syscall.EINVAL, "a\x00b": syscall.EINVAL,
	} {
		if e, _ := call(t, s, wwwData, OpVerifyToken, tok(tk)); e != want {
			t.Errorf("token %q: %v, want %v", tk, e, want)
		}
	}
	if e, _ := call(t, s, root, OpVerifyToken, []byte("root@pam!t abc")); e != syscall.EINVAL {
		t.Errorf("unterminated: %v, want EINVAL", e)
	}
}

func guestFiles() map[string]string {
	return map[string]string{
		"nodes/node1/qemu-server/100.conf": "name: myvm\nmemory:   2048  \nlock: backup\n\n[snap]\nmemory: 1\n",
		"nodes/node1/qemu-server/101.conf": "memory: 512\ndescription: a \"q\" \\ b",
		"nodes/node1/lxc/102.conf":         "hostname: ct\n",
		"nodes/node1/qemu-server/103.conf": "",
	}
}

func TestGuestConfigProperty(t *testing.T) {
	s, _ := newServer(t, guestFiles())
	prop := func(vmid uint32, p string) []byte { return append(append(u32(vmid), p...), 0) }
	for _, c := range []struct {
		vmid uint32
		prop string
		e    syscall.Errno
		out  string
	}{
		{100, "memory", 0, "{\n\"100\":{\"memory\": \"2048\"}\n}\n"},
		{100, "name", 0, "{\n\"100\":{\"name\": \"myvm\"}\n}\n"},
		{100, "nothere", 0, "{\n\n}\n"},
		{101, "description", 0, "{\n\"101\":{\"description\": \"a \\\"q\\\" \\\\ b\"}\n}\n"},
		{0, "memory", 0, "{\n\"100\":{\"memory\": \"2048\"},\n\"101\":{\"memory\": \"512\"}\n}\n"},
		{0, "", 0, "{\n\n}\n"},
		{50, "memory", syscall.EINVAL, ""},
		{999, "memory", syscall.ENOENT, ""},
		{103, "memory", syscall.EIO, ""},
	} {
		e, out := call(t, s, root, OpGetGuestConfigProperty, prop(c.vmid, c.prop))
		if e != c.e || string(out) != c.out {
			t.Errorf("%d %q: %v %q, want %v %q", c.vmid, c.prop, e, out, c.e, c.out)
		}
	}
	if e, _ := call(t, s, root, OpGetGuestConfigProperty, u32(100)); e != syscall.EINVAL {
		t.Errorf("no property: %v, want EINVAL", e)
	}
}

// propsReq is Perl's pack "VC" followed by Z* names.
func propsReq(vmid uint32, names ...string) []byte {
	b := append(u32(vmid), uint8(len(names)))
	for _, n := range names {
		b = append(append(b, n...), 0)
	}
	return b
}

func TestGuestConfigProperties(t *testing.T) {
	s, _ := newServer(t, guestFiles())
	// the output upstream 9.1.6's status.c:cfs_create_guest_conf_properties_msg gave
	e, out := call(t, s, root, OpGetGuestConfigProperties, propsReq(0, "name", "memory"))
	if want := "{\n\"100\":{\"name\": \"myvm\",\"memory\": \"2048\"},\n\"101\":{\"memory\": \"512\"}\n}\n"; e != 0 || string(out) != want {
		t.Errorf("got %v %q, want %q", e, out, want)
	}
	e, out = call(t, s, root, OpGetGuestConfigProperties, propsReq(102, "hostname", "memory"))
	if want := "{\n\"102\":{\"hostname\": \"ct\"}\n}\n"; e != 0 || string(out) != want {
		t.Errorf("got %v %q, want %q", e, out, want)
	}
	for name, req := range map[string][]byte{
		"uppercase":  propsReq(100, "Memory"),
		"empty name": propsReq(100, "memory", ""),
		"no props":   propsReq(100),
		"leftover":   append(propsReq(100, "memory"), 'x'),
		"missing":    propsReq(100, "memory", "name")[:len(propsReq(100, "memory", "name"))-1],
		"count":      append(u32(100), 3, 'a', 0),
		"short":      u32(100),
		"vmid 50":    propsReq(50, "memory"),
	} {
		if e, _ := call(t, s, root, OpGetGuestConfigProperties, req); e != syscall.EINVAL {
			t.Errorf("%s: %v, want EINVAL", name, e)
		}
	}
	if e, _ := call(t, s, root, OpGetGuestConfigProperties, propsReq(999, "memory")); e != syscall.ENOENT {
		t.Errorf("vmid 999: %v, want ENOENT", e)
	}
}

func TestFindPropertiesQuirks(t *testing.T) {
	for _, c := range []struct {
		conf  string
		props []string
		want  []string // "" = not found
	}{
		// a repeated single property: upstream keeps the second occurrence
		{"memory: 1\nmemory: 2\nmemory: 3\n", []string{"memory"}, []string{"2"}},
		{"memory: 1\n", []string{"memory"}, []string{"1"}},
		// a value of only blanks keeps one blank
		{"name:   \n", []string{"name"}, []string{" "}},
		{"name:\n", []string{"name"}, []string{""}},
		{" name: x\nname: y", []string{"name"}, []string{"y"}},
		{"[pending]\nname: x\n", []string{"name"}, []string{""}},
		{"a: 1\nb: 2\n", []string{"b", "a"}, []string{"2", "1"}},
	} {
		got := findProperties([]byte(c.conf), c.props)
		for i := range c.props {
			if string(got[i]) != c.want[i] || (c.want[i] == "") != (got[i] == nil) {
				t.Errorf("%q %v: %q, want %q", c.conf, c.props, got[i], c.want[i])
			}
		}
	}
}

func TestMalformedHeader(t *testing.T) {
	s, _ := newServer(t, nil)
	r := request(OpGetFSVersion, nil)
	binary.NativeEndian.PutUint32(r[8:], 100) // declares more than was received
	if e, _ := s.Handle(root, r); e != syscall.EINVAL {
		t.Errorf("oversized header: %v", e)
	}
	if e, _ := s.Handle(root, r[:8]); e != syscall.EINVAL {
		t.Errorf("short header: %v", e)
	}
}

func TestAccept(t *testing.T) {
	s, _ := newServer(t, nil)
	for c, want := range map[qb.Creds]bool{
		{UID: 0, GID: 0}: true, {UID: 33, GID: 33}: true, {UID: 0, GID: 33}: true,
		{UID: 33, GID: 0}: false, {UID: 65534, GID: 65534}: false, {UID: 1000, GID: 0}: false,
	} {
		if s.Accept(c) != want {
			t.Errorf("Accept(%+v) = %v", c, !want)
		}
	}
}

func FuzzHandle(f *testing.F) {
	f.Add(request(OpGetConfig, []byte("a\x00")))
	f.Add(request(OpLogClusterMsg, logReq(6, "a", "b", "c")))
	f.Add(request(OpGetGuestConfigProperties, propsReq(0, "name", "memory")))
	f.Add(request(OpGetGuestConfigProperty, append(u32(100), "memory\x00"...)))
	f.Add(request(OpVerifyToken, []byte("x y\x00")))
	f.Add(request(OpSetStatus, append(z("kv/x", 256), "v\x00"...)))
	f.Add(request(OpGetClusterLog, append(make([]byte, 16), 0)))
	s, _ := newServer(f, guestFiles())
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, c := range []qb.Creds{root, wwwData} {
			e, out := s.Handle(c, raw)
			if e != 0 && out != nil {
				t.Fatalf("error %v with data", e)
			}
		}
	})
}
