// Package ipc answers the requests of pmxcfs's "pve2" IPC service (upstream's
// server.c:s1_msg_process_fn): it decodes upstream's request layouts, applies the
// connection and read-only rules and serves each operation from status and memdb. The
// transport (libqb) is package qb; this package is pure Go.
package ipc

import (
	"bytes"
	"encoding/binary"
	"strings"
	"syscall"

	"github.com/pmxcfs-go/pmxcfs/clusterlog"
	"github.com/pmxcfs-go/pmxcfs/internal/errno"
	"github.com/pmxcfs-go/pmxcfs/memdb"
	"github.com/pmxcfs-go/pmxcfs/qb"
	"github.com/pmxcfs-go/pmxcfs/status"
	"github.com/sirupsen/logrus"
)

// Operation ids (cfs-ipc-ops.h; Perl's PVE::Cluster::IPCConst is generated
// from them, so they are an ABI).
const (
	OpGetFSVersion             = 1
	OpGetClusterInfo           = 2
	OpGetGuestList             = 3
	OpSetStatus                = 4
	OpGetStatus                = 5
	OpGetConfig                = 6
	OpLogClusterMsg            = 7
	OpGetClusterLog            = 8
	OpGetRRDDump               = 10
	OpGetGuestConfigProperty   = 11
	OpVerifyToken              = 12
	OpGetGuestConfigProperties = 13
	headerSize                 = qb.RequestHeaderSize
	nameSize                   = 256
	maxReply                   = 1024 * 1024
	tokenFile                  = "priv/token.cfg"
	logDataOffset              = headerSize + 3
	propertyOffset             = headerSize + 4
	propertiesOffset           = headerSize + 5
	clusterLogUserOffset       = headerSize + 16
	setStatusValueOffset       = headerSize + nameSize
	getStatusRequestSize       = headerSize + 2*nameSize
)

// Files is what the IPC reads from the configuration tree; *memdb.DB
// implements it.
type Files interface {
	ReadFile(path string) ([]byte, error)
	VMList() memdb.VMList
}

// Cluster sends local changes to the other nodes (KVSTORE UPDATE and LOG).
// Implementations must not block on the network: IPC requests never wait for
// the cluster.
type Cluster interface {
	Broadcast(key string, value []byte)
	SendLog(e clusterlog.Entry)
}

// Server answers IPC requests. Status and DB are required; Cluster may be
// nil (local mode, or before KVSTORE is up).
type Server struct {
	Status  *status.Status
	DB      Files
	Cluster Cluster
	// WWWDataGID is the read-only group (www-data, 33 on Debian).
	WWWDataGID uint32
	Log        *logrus.Entry
}

// Accept implements qb.Handler (server.c s1_connection_accept_fn): root:root
// is read-write, the www-data group read-only, everyone else is refused.
func (s *Server) Accept(c qb.Creds) bool {
	if (c.UID == 0 && c.GID == 0) || c.GID == s.WWWDataGID {
		return true
	}
	s.logger().Errorf("connection from bad user %d! - rejected", c.UID)
	return false
}

func (s *Server) readOnly(c qb.Creds) bool { return c.GID == s.WWWDataGID }

func (s *Server) logger() *logrus.Entry {
	if s.Log != nil {
		return s.Log
	}
	return logrus.NewEntry(logrus.StandardLogger())
}

// Handle implements qb.Handler: one request (16-byte header included) in,
// an errno and the reply data out.
//
// A reply larger than the client's 1 MiB buffer cannot be delivered. Upstream
// tries anyway: its send fails, server.c:s1_msg_process_fn logs it and drops the
// connection, and the client's qb_ipcc_sendv_recv returns ENOBUFS, which is the
// errno PVE::IPCC callers see. We answer ENOBUFS in the reply header instead, so
// callers see the same errno and the connection stays usable.
func (s *Server) Handle(c qb.Creds, req []byte) (syscall.Errno, []byte) {
	errno, reply := s.handle(c, req)
	if errno != 0 || len(reply) == 0 {
		return errno, nil
	}
	if len(reply)+qb.ResponseHeaderSize > maxReply {
		s.logger().Warnf("IPC reply of %d bytes exceeds the client buffer", len(reply))
		return syscall.ENOBUFS, nil
	}
	return 0, reply
}

func (s *Server) handle(c qb.Creds, raw []byte) (syscall.Errno, []byte) {
	id, req, ok := decodeHeader(raw)
	if !ok {
		return syscall.EINVAL, nil
	}
	switch id {
	case OpGetFSVersion, OpGetClusterInfo, OpGetGuestList, OpGetRRDDump:
		if len(req) != headerSize {
			return syscall.EINVAL, nil
		}
		switch id {
		case OpGetFSVersion:
			return 0, s.Status.Version()
		case OpGetClusterInfo:
			return 0, s.Status.Members()
		case OpGetGuestList:
			return 0, s.Status.VMList()
		default:
			return 0, s.Status.RRDDump()
		}
	case OpSetStatus:
		return s.setStatus(c, req), nil
	case OpGetStatus:
		return s.getStatus(req)
	case OpGetConfig:
		return s.getConfig(c, req)
	case OpLogClusterMsg:
		return s.logClusterMsg(c, req), nil
	case OpGetClusterLog:
		if len(req) <= clusterLogUserOffset {
			return syscall.EINVAL, nil
		}
		maxEntries := binary.NativeEndian.Uint32(req[headerSize:])
		return 0, s.Status.ClusterLogDump(cString(req[clusterLogUserOffset:len(req)-1]), maxEntries)
	case OpGetGuestConfigProperty:
		return s.guestConfigProperty(req)
	case OpVerifyToken:
		return s.verifyToken(req), nil
	case OpGetGuestConfigProperties:
		return s.guestConfigProperties(req)
	}
	return syscall.ECHRNG, nil
}

// decodeHeader returns the request id and the request cut to the size its
// header declares. A declared size outside [16, received] is refused:
// upstream would read past the buffer.
func decodeHeader(raw []byte) (int32, []byte, bool) {
	if len(raw) < headerSize {
		return 0, nil, false
	}
	id := int32(binary.NativeEndian.Uint32(raw[0:]))
	size := int32(binary.NativeEndian.Uint32(raw[8:]))
	if size < headerSize || int(size) > len(raw) {
		return id, nil, false
	}
	return id, raw[:size], true
}

// cString is the C string at the start of b (up to the first NUL).
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func (s *Server) setStatus(c qb.Creds, req []byte) syscall.Errno {
	if s.readOnly(c) {
		return syscall.EPERM
	}
	if len(req) < setStatusValueOffset {
		return syscall.EINVAL
	}
	// name[256], its last byte forced to NUL
	key := cString(req[headerSize : setStatusValueOffset-1])
	value := bytes.Clone(req[setStatusValueOffset:])
	err := s.Status.SetStatus(key, value)
	if err == syscall.EFBIG {
		return syscall.EFBIG
	}
	// Upstream broadcasts even when the local store refused the value.
	if s.Cluster != nil {
		s.Cluster.Broadcast(key, value)
	}
	return errno.From(err)
}

func (s *Server) getStatus(req []byte) (syscall.Errno, []byte) {
	if len(req) < getStatusRequestSize {
		return syscall.EINVAL, nil
	}
	key := cString(req[headerSize : headerSize+nameSize-1])
	node := cString(req[headerSize+nameSize : getStatusRequestSize-1])
	v, err := s.Status.GetStatus(node, key)
	if err != nil {
		return errno.From(err), nil
	}
	return 0, v
}

func (s *Server) getConfig(c qb.Creds, req []byte) (syscall.Errno, []byte) {
	if len(req) <= headerSize {
		return syscall.EINVAL, nil
	}
	path := cString(req[headerSize : len(req)-1])
	if s.readOnly(c) && IsPrivate(path) {
		return syscall.EPERM, nil
	}
	data, err := s.DB.ReadFile(path)
	if err != nil {
		return errno.From(err), nil
	}
	return 0, data
}

// IsPrivate reports whether path is readable only by read-write clients:
// "priv" and below, and "nodes/<node>/priv" and below. Unlike upstream's
// path_is_private it looks at the canonical path (empty components dropped,
// as memdb's lookup does), so "nodes/n//priv/x" is private too (upstream lets read-only
// clients read it).
func IsPrivate(path string) bool {
	var parts []string
	for _, p := range strings.Split(path, "/") {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if len(parts) >= 1 && parts[0] == "priv" {
		return true
	}
	return len(parts) >= 3 && parts[0] == "nodes" && parts[2] == "priv"
}

func (s *Server) logClusterMsg(c qb.Creds, req []byte) syscall.Errno {
	if s.readOnly(c) {
		return syscall.EPERM
	}
	if len(req) < logDataOffset {
		return syscall.EINVAL
	}
	priority := req[headerSize]
	identLen, tagLen := int(req[headerSize+1]), int(req[headerSize+2])
	data := req[logDataOffset:]
	// Perl sends ident and tag with their NULs, so both lengths are at least 1;
	// upstream would index before the data with a zero length.
	if identLen == 0 || tagLen == 0 || len(data)-identLen-tagLen < 1 {
		return syscall.EINVAL
	}
	// The message's terminator is the request's last byte (upstream looks one
	// byte past the end, server.c:s1_msg_process_fn).
	if data[identLen-1] != 0 || data[identLen+tagLen-1] != 0 || req[len(req)-1] != 0 {
		return syscall.EINVAL
	}
	ident := cString(data[:identLen])
	tag := cString(data[identLen : identLen+tagLen])
	msg := cString(data[identLen+tagLen:])
	e, err := s.Status.LogMessage(ident, tag, uint32(c.PID), priority, msg)
	if err != nil {
		// priority >= 8 and the like: not logged, still success (upstream)
		return 0
	}
	if s.Cluster != nil {
		s.Cluster.SendLog(e)
	}
	return 0
}

func (s *Server) verifyToken(req []byte) syscall.Errno {
	tokenLen := len(req) - headerSize - 1
	if tokenLen <= 0 {
		return syscall.EINVAL
	}
	token := req[headerSize : headerSize+tokenLen]
	if bytes.IndexByte(token, '\n') >= 0 || req[len(req)-1] != 0 || bytes.IndexByte(token, 0) >= 0 {
		return syscall.EINVAL
	}
	cfg, err := s.DB.ReadFile(tokenFile)
	if err != nil || len(cfg) == 0 {
		return syscall.ENOENT
	}
	for _, line := range bytes.Split(cfg, []byte{'\n'}) {
		if bytes.Equal(line, token) {
			return 0
		}
	}
	return syscall.ENOENT
}

// checkVMID applies the vmid rules of ops 11 and 13: 1-99 is invalid, a
// vmid >= 100 must be in the VM list, 0 means every guest.
func (s *Server) checkVMID(vmid uint32) syscall.Errno {
	if vmid != 0 && vmid < 100 {
		return syscall.EINVAL
	}
	if vmid >= 100 {
		if _, ok := s.DB.VMList().VMs[vmid]; !ok {
			return syscall.ENOENT
		}
	}
	return 0
}

func (s *Server) guestConfigProperty(req []byte) (syscall.Errno, []byte) {
	if len(req) < propertyOffset {
		return syscall.EINVAL, nil
	}
	vmid := binary.NativeEndian.Uint32(req[headerSize:])
	if e := s.checkVMID(vmid); e != 0 {
		return e, nil
	}
	if len(req) == propertyOffset {
		return syscall.EINVAL, nil
	}
	prop := cString(req[propertyOffset : len(req)-1])
	return s.guestProperties([]string{prop}, vmid)
}

func (s *Server) guestConfigProperties(req []byte) (syscall.Errno, []byte) {
	if len(req) < propertiesOffset {
		return syscall.EINVAL, nil
	}
	vmid := binary.NativeEndian.Uint32(req[headerSize:])
	if e := s.checkVMID(vmid); e != 0 {
		return e, nil
	}
	props, ok := parsePropertyNames(int(req[headerSize+4]), req[propertiesOffset:])
	if !ok {
		return syscall.EINVAL, nil
	}
	return s.guestProperties(props, vmid)
}

// parsePropertyNames splits num NUL-terminated names that must use up rest
// exactly, each starting with a-z.
func parsePropertyNames(num int, rest []byte) ([]string, bool) {
	if num == 0 || len(rest) <= 1 {
		return nil, false
	}
	props := make([]string, 0, num)
	for range num {
		n := bytes.IndexByte(rest, 0)
		if n <= 0 || rest[0] < 'a' || rest[0] > 'z' {
			return nil, false
		}
		props = append(props, string(rest[:n]))
		rest = rest[n+1:]
	}
	return props, len(rest) == 0
}
