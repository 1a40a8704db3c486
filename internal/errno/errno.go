// Package errno turns the errors of memdb and its callers into the errno a client sees,
// the one rule shared by the FUSE nodes, the IPC server and the DCDB application: a
// syscall.Errno anywhere in the wrap chain is the answer, anything else is EIO.
package errno

import (
	"errors"
	"syscall"
)

// From returns 0 for nil, the first syscall.Errno wrapped in err, or EIO.
func From(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}
