// Package qb serves a libqb IPC service (the transport of pmxcfs's "pve2"
// socket) through cgo, so stock libqb clients such as Perl's PVE::IPCC can
// talk to the Go daemon. It knows nothing of the requests it carries: a Go
// Handler decides who may connect and answers each request.
package qb

/*
#cgo LDFLAGS: -lqb
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/uio.h>
#include <qb/qbdefs.h>
#include <qb/qbipcs.h>
#include <qb/qbloop.h>

// Credentials kept per connection; plain C memory, no Go pointers.
struct conn_creds { uint32_t uid, gid; int32_t pid; };

// One served instance; it lives in C memory and carries the Go handle as a number.
struct qbsrv {
	qb_loop_t *loop;
	qb_ipcs_service_t *svc;
	int stop_pipe[2];
	uintptr_t handle;
};

extern int goAccept(uintptr_t h, uint32_t uid, uint32_t gid, int32_t pid);
extern void goMessage(uintptr_t h, uint32_t uid, uint32_t gid, int32_t pid, void *data, size_t size,
	int32_t *err, void **reply, size_t *reply_len);

static struct qbsrv *srv_of(qb_ipcs_connection_t *c) {
	return (struct qbsrv *)qb_ipcs_connection_service_context_get(c);
}

static int32_t accept_fn(qb_ipcs_connection_t *c, uid_t uid, gid_t gid) {
	struct qb_ipcs_connection_stats stats;
	memset(&stats, 0, sizeof(stats));
	qb_ipcs_connection_stats_get(c, &stats, QB_FALSE);
	if (goAccept(srv_of(c)->handle, uid, gid, stats.client_pid) != 0) {
		return 1;
	}
	struct conn_creds *cr = calloc(1, sizeof(*cr));
	if (cr == NULL) {
		return 1;
	}
	cr->uid = uid;
	cr->gid = gid;
	cr->pid = stats.client_pid;
	qb_ipcs_context_set(c, cr);
	return 0;
}

static void destroyed_fn(qb_ipcs_connection_t *c) {
	free(qb_ipcs_context_get(c));
	qb_ipcs_context_set(c, NULL);
}

static int32_t msg_fn(qb_ipcs_connection_t *c, void *data, size_t size) {
	struct conn_creds *cr = qb_ipcs_context_get(c);
	if (cr == NULL || size < sizeof(struct qb_ipc_request_header)) {
		qb_ipcs_disconnect(c);
		return 0;
	}
	struct qb_ipc_request_header *req = data;
	int32_t err = -EINVAL;
	void *reply = NULL;
	size_t reply_len = 0;
	goMessage(srv_of(c)->handle, cr->uid, cr->gid, cr->pid, data, size, &err, &reply, &reply_len);

	struct qb_ipc_response_header hdr;
	memset(&hdr, 0, sizeof(hdr));
	hdr.id = req->id;
	hdr.size = sizeof(hdr) + reply_len;
	hdr.error = err;
	struct iovec iov[2] = {
		{ .iov_base = &hdr, .iov_len = sizeof(hdr) },
		{ .iov_base = reply, .iov_len = reply_len },
	};
	ssize_t res = qb_ipcs_response_sendv(c, iov, reply_len ? 2 : 1);
	free(reply);
	if (res < 0) {
		qb_ipcs_disconnect(c);
	}
	return 0;
}

static int32_t closed_fn(qb_ipcs_connection_t *c) { return 0; }
static void created_fn(qb_ipcs_connection_t *c) {}

static struct qb_ipcs_service_handlers handlers = {
	.connection_accept = accept_fn,
	.connection_created = created_fn,
	.msg_process = msg_fn,
	.connection_destroyed = destroyed_fn,
	.connection_closed = closed_fn,
};

// The loop of the service running on this thread: libqb's poll callbacks
// carry no context, and each service has its own thread.
static __thread qb_loop_t *thread_loop;

static int32_t job_add(enum qb_loop_priority p, void *data, qb_loop_job_dispatch_fn fn) {
	return qb_loop_job_add(thread_loop, p, data, fn);
}
static int32_t dispatch_add(enum qb_loop_priority p, int32_t fd, int32_t evts, void *data,
	qb_ipcs_dispatch_fn_t fn) {
	return qb_loop_poll_add(thread_loop, p, fd, evts, data, fn);
}
static int32_t dispatch_mod(enum qb_loop_priority p, int32_t fd, int32_t evts, void *data,
	qb_ipcs_dispatch_fn_t fn) {
	return qb_loop_poll_mod(thread_loop, p, fd, evts, data, fn);
}
static int32_t dispatch_del(int32_t fd) { return qb_loop_poll_del(thread_loop, fd); }

static struct qb_ipcs_poll_handlers poll_handlers = {
	.job_add = job_add,
	.dispatch_add = dispatch_add,
	.dispatch_mod = dispatch_mod,
	.dispatch_del = dispatch_del,
};

static int32_t stop_fn(int32_t fd, int32_t revents, void *data) {
	struct qbsrv *s = data;
	if (s->svc != NULL) {
		qb_ipcs_destroy(s->svc);
		s->svc = NULL;
	}
	qb_loop_poll_del(s->loop, fd);
	qb_loop_stop(s->loop);
	return 0;
}

// srv_create sets up loop and service; on failure it returns NULL with errno set.
static struct qbsrv *srv_create(const char *name, uintptr_t handle) {
	struct qbsrv *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		return NULL;
	}
	s->handle = handle;
	if (pipe(s->stop_pipe) != 0) {
		int e = errno;
		free(s);
		errno = e;
		return NULL;
	}
	fcntl(s->stop_pipe[0], F_SETFD, FD_CLOEXEC);
	fcntl(s->stop_pipe[1], F_SETFD, FD_CLOEXEC);
	s->loop = qb_loop_create();
	if (s->loop == NULL) {
		goto fail;
	}
	thread_loop = s->loop;
	s->svc = qb_ipcs_create(name, 1, QB_IPC_SHM, &handlers);
	if (s->svc == NULL) {
		goto fail;
	}
	qb_ipcs_service_context_set(s->svc, s);
	qb_ipcs_poll_handlers_set(s->svc, &poll_handlers);
	qb_loop_poll_add(s->loop, QB_LOOP_HIGH, s->stop_pipe[0], POLLIN, s, stop_fn);
	int rc = qb_ipcs_run(s->svc);
	if (rc < 0) {
		// A failed qb_ipcs_run has already dropped the service's reference (libqb
		// ipcs.c:qb_ipcs_run); destroying it again would abort on libqb's assertion.
		s->svc = NULL;
		errno = -rc;
		goto fail;
	}
	return s;
fail:;
	int e = errno ? errno : EIO;
	if (s->svc != NULL) {
		qb_ipcs_destroy(s->svc);
	}
	if (s->loop != NULL) {
		qb_loop_destroy(s->loop);
	}
	close(s->stop_pipe[0]);
	close(s->stop_pipe[1]);
	free(s);
	errno = e;
	return NULL;
}

static void srv_run(struct qbsrv *s) { qb_loop_run(s->loop); }

static void srv_request_stop(struct qbsrv *s) {
	char b = 1;
	ssize_t r = write(s->stop_pipe[1], &b, 1);
	(void)r;
}

static void srv_free(struct qbsrv *s) {
	qb_loop_destroy(s->loop);
	close(s->stop_pipe[0]);
	close(s->stop_pipe[1]);
	free(s);
}
*/
import "C"

import (
	"errors"
	"runtime"
	"runtime/cgo"
	"sync"
	"syscall"
	"unsafe"
)

// Creds are the credentials libqb read from the client's socket (SO_PASSCRED).
type Creds struct {
	UID, GID uint32
	PID      int32
}

// Handler answers a service's clients. Both methods run on the service's
// loop thread, one call at a time.
type Handler interface {
	// Accept decides whether a client may connect.
	Accept(c Creds) bool
	// Handle answers one request (the raw bytes, libqb's 16-byte request
	// header included). errno 0 sends reply; otherwise the reply carries
	// -errno and no data.
	Handle(c Creds, request []byte) (errno syscall.Errno, reply []byte)
}

// RequestHeaderSize and ResponseHeaderSize are libqb's header sizes.
const (
	RequestHeaderSize  = 16
	ResponseHeaderSize = 24
)

// Service is one running libqb IPC service.
type Service struct {
	srv    *C.struct_qbsrv
	handle cgo.Handle
	done   chan struct{}
	once   sync.Once
}

// Listen creates the service name (service id 1, shared-memory transport,
// as upstream) and starts its loop on a dedicated OS thread.
func Listen(name string, h Handler) (*Service, error) {
	if h == nil {
		return nil, errors.New("qb: nil handler")
	}
	s := &Service{handle: cgo.NewHandle(h), done: make(chan struct{})}
	created := make(chan error, 1)
	go func() {
		// libqb's loop and service are used from this thread only.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cname := C.CString(name)
		srv, err := C.srv_create(cname, C.uintptr_t(s.handle))
		C.free(unsafe.Pointer(cname))
		if srv == nil {
			if err == nil {
				err = syscall.EIO
			}
			created <- err
			close(s.done)
			return
		}
		s.srv = srv
		created <- nil
		C.srv_run(srv)
		C.srv_free(srv)
		close(s.done)
	}()
	if err := <-created; err != nil {
		s.handle.Delete()
		return nil, err
	}
	return s, nil
}

// Stop destroys the service (disconnecting every client) and waits for its
// loop to end. It is safe to call more than once.
func (s *Service) Stop() {
	s.once.Do(func() {
		C.srv_request_stop(s.srv)
		<-s.done
		s.handle.Delete()
	})
}

func handlerOf(h C.uintptr_t) Handler {
	return cgo.Handle(h).Value().(Handler)
}

//export goAccept
func goAccept(h C.uintptr_t, uid, gid C.uint32_t, pid C.int32_t) C.int {
	if handlerOf(h).Accept(Creds{UID: uint32(uid), GID: uint32(gid), PID: int32(pid)}) {
		return 0
	}
	return 1
}

//export goMessage
func goMessage(h C.uintptr_t, uid, gid C.uint32_t, pid C.int32_t, data unsafe.Pointer, size C.size_t,
	errOut *C.int32_t, reply *unsafe.Pointer, replyLen *C.size_t) {
	req := C.GoBytes(data, C.int(size))
	errno, out := handlerOf(h).Handle(Creds{UID: uint32(uid), GID: uint32(gid), PID: int32(pid)}, req)
	if errno != 0 {
		*errOut = -C.int32_t(errno)
		return
	}
	*errOut = 0
	if len(out) > 0 {
		*reply = C.CBytes(out)
		*replyLen = C.size_t(len(out))
	}
}
