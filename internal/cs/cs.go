// Package cs holds what the corosync bindings (cpg, votequorum, cmap) share: the cs_error_t
// codes as Go errors, the life cycle of one library connection (Conn: close at any time,
// dispatch loop, callback lookup) and upstream's CS_ERR_TRY_AGAIN retry policies. It has no
// cgo itself: a binding hands it closures around its C calls, so code without cgo (the DFSM
// engine) can use the same retry policy.
package cs

import "fmt"

// Code is a corosync cs_error_t value. A Code is itself an error, so the
// exported constants serve as sentinels for errors.Is.
type Code int32

// The cs_error_t values from corosync/corotypes.h.
const (
	OK                   Code = 1
	ErrLibrary           Code = 2
	ErrVersion           Code = 3
	ErrInit              Code = 4
	ErrTimeout           Code = 5
	ErrTryAgain          Code = 6
	ErrInvalidParam      Code = 7
	ErrNoMemory          Code = 8
	ErrBadHandle         Code = 9
	ErrBusy              Code = 10
	ErrAccess            Code = 11
	ErrNotExist          Code = 12
	ErrNameTooLong       Code = 13
	ErrExist             Code = 14
	ErrNoSpace           Code = 15
	ErrInterrupt         Code = 16
	ErrNameNotFound      Code = 17
	ErrNoResources       Code = 18
	ErrNotSupported      Code = 19
	ErrBadOperation      Code = 20
	ErrFailedOperation   Code = 21
	ErrMessageError      Code = 22
	ErrQueueFull         Code = 23
	ErrQueueNotAvailable Code = 24
	ErrBadFlags          Code = 25
	ErrTooBig            Code = 26
	ErrNoSections        Code = 27
	ErrContextNotFound   Code = 28
	ErrTooManyGroups     Code = 30
	ErrSecurity          Code = 100
)

var codeNames = map[Code]string{
	OK: "CS_OK", ErrLibrary: "CS_ERR_LIBRARY", ErrVersion: "CS_ERR_VERSION",
	ErrInit: "CS_ERR_INIT", ErrTimeout: "CS_ERR_TIMEOUT", ErrTryAgain: "CS_ERR_TRY_AGAIN",
	ErrInvalidParam: "CS_ERR_INVALID_PARAM", ErrNoMemory: "CS_ERR_NO_MEMORY",
	ErrBadHandle: "CS_ERR_BAD_HANDLE", ErrBusy: "CS_ERR_BUSY", ErrAccess: "CS_ERR_ACCESS",
	ErrNotExist: "CS_ERR_NOT_EXIST", ErrNameTooLong: "CS_ERR_NAME_TOO_LONG",
	ErrExist: "CS_ERR_EXIST", ErrNoSpace: "CS_ERR_NO_SPACE", ErrInterrupt: "CS_ERR_INTERRUPT",
	ErrNameNotFound: "CS_ERR_NAME_NOT_FOUND", ErrNoResources: "CS_ERR_NO_RESOURCES",
	ErrNotSupported: "CS_ERR_NOT_SUPPORTED", ErrBadOperation: "CS_ERR_BAD_OPERATION",
	ErrFailedOperation: "CS_ERR_FAILED_OPERATION", ErrMessageError: "CS_ERR_MESSAGE_ERROR",
	ErrQueueFull: "CS_ERR_QUEUE_FULL", ErrQueueNotAvailable: "CS_ERR_QUEUE_NOT_AVAILABLE",
	ErrBadFlags: "CS_ERR_BAD_FLAGS", ErrTooBig: "CS_ERR_TOO_BIG", ErrNoSections: "CS_ERR_NO_SECTIONS",
	ErrContextNotFound: "CS_ERR_CONTEXT_NOT_FOUND", ErrTooManyGroups: "CS_ERR_TOO_MANY_GROUPS",
	ErrSecurity: "CS_ERR_SECURITY",
}

// String returns the C enumerator name, e.g. "CS_ERR_TRY_AGAIN".
func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("CS_ERR_UNKNOWN(%d)", int32(c))
}

func (c Code) Error() string { return c.String() }

// Error is a failed call into a corosync library.
type Error struct {
	Op     string // the C function, e.g. "cpg_mcast_joined"
	Code   Code
	Detail string // optional, e.g. "handle closed"
}

func (e *Error) Error() string {
	pkg := e.Op
	for i := 0; i < len(pkg); i++ {
		if pkg[i] == '_' {
			pkg = pkg[:i]
			break
		}
	}
	s := pkg + ": " + e.Op + ": " + e.Code.String()
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

// Unwrap lets errors.Is(err, ErrTryAgain) match.
func (e *Error) Unwrap() error { return e.Code }

// Check turns a cs_error_t result into nil or an *Error.
func Check(op string, c Code) error {
	if c == OK {
		return nil
	}
	return &Error{Op: op, Code: c}
}

// Closed is the error for a call on a handle that was closed.
func Closed(op string) error {
	return &Error{Op: op, Code: ErrBadHandle, Detail: "handle closed"}
}
