package errno

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"
)

func TestFrom(t *testing.T) {
	for _, c := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{syscall.ENOENT, syscall.ENOENT},
		{fmt.Errorf("create /x: %w", syscall.EEXIST), syscall.EEXIST},
		{&fs.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}, syscall.EACCES},
		{errors.Join(errors.New("a"), syscall.ENOTEMPTY), syscall.ENOTEMPTY},
		{errors.New("disk on fire"), syscall.EIO},
	} {
		if got := From(c.err); got != c.want {
			t.Errorf("From(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
