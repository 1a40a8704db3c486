// Package qbclient is a minimal libqb IPC client, used by pvecm and the tests: it talks
// to a service the way Perl's PVE::IPCC does (qb_ipcc_connect with a 1 MiB buffer,
// one qb_ipcc_sendv_recv per request) and shares no code with the server.
package qbclient

/*
#cgo LDFLAGS: -lqb
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <qb/qbdefs.h>
#include <qb/qbipcc.h>

// Request header layout as IPCC.xs builds it: id at 0, size at 8.
static ssize_t send_recv(qb_ipcc_connection_t *c, int32_t id, const void *payload, size_t len,
	void *resp, size_t resp_len) {
	struct qb_ipc_request_header hdr;
	memset(&hdr, 0, sizeof(hdr));
	hdr.id = id;
	hdr.size = sizeof(hdr) + len;
	struct iovec iov[2] = {
		{ .iov_base = &hdr, .iov_len = sizeof(hdr) },
		{ .iov_base = (void *)payload, .iov_len = len },
	};
	return qb_ipcc_sendv_recv(c, iov, len ? 2 : 1, resp, resp_len, -1);
}
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"syscall"
	"unsafe"
)

// MaxMsgSize is the buffer size IPCC.xs asks for (8192 * 128).
const MaxMsgSize = 8192 * 128

// Conn is one client connection.
type Conn struct {
	c    *C.qb_ipcc_connection_t
	resp unsafe.Pointer
}

// Connect opens a connection to the named service.
func Connect(name string) (*Conn, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	c, err := C.qb_ipcc_connect(cname, MaxMsgSize)
	if c == nil {
		if err == nil {
			err = syscall.EIO
		}
		return nil, err
	}
	return &Conn{c: c, resp: C.malloc(MaxMsgSize)}, nil
}

// Close disconnects.
func (c *Conn) Close() {
	if c.c != nil {
		C.qb_ipcc_disconnect(c.c)
		C.free(c.resp)
		c.c = nil
	}
}

// Response is a decoded libqb response (24-byte header: id at 0, size at 8,
// error at 16).
type Response struct {
	ID    int32
	Size  int32
	Error int32
	Data  []byte
}

// Send sends payload (after the 16-byte header) as request id.
func (c *Conn) Send(id int32, payload []byte) (Response, error) {
	var p unsafe.Pointer
	if len(payload) > 0 {
		p = C.CBytes(payload)
		defer C.free(p)
	}
	n, err := C.send_recv(c.c, C.int32_t(id), p, C.size_t(len(payload)), c.resp, MaxMsgSize)
	if n < 0 {
		return Response{}, fmt.Errorf("qb_ipcc_sendv_recv: %w", syscall.Errno(-n))
	}
	_ = err
	b := C.GoBytes(c.resp, C.int(n))
	if len(b) < 24 {
		return Response{}, fmt.Errorf("short response: %d bytes", len(b))
	}
	r := Response{
		ID:    int32(binary.NativeEndian.Uint32(b[0:])),
		Size:  int32(binary.NativeEndian.Uint32(b[8:])),
		Error: int32(binary.NativeEndian.Uint32(b[16:])),
		Data:  b[24:],
	}
	return r, nil
}
