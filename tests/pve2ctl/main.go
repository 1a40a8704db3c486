// Command pve2ctl is a small IPC client for the cluster tests: it runs inside a bench node
// and talks to that node's pmxcfs over "pve2" with the request layouts PVE's Perl client uses.
//
//	pve2ctl set KEY VALUE      SET_STATUS (value sent with its NUL, like Perl)
//	pve2ctl get NODE KEY       GET_STATUS, prints the value without its NUL
//	pve2ctl log MESSAGE        LOG_CLUSTER_MSG as root@pam, tag "test", priority 6
//	pve2ctl clusterlog         GET_CLUSTER_LOG (50 entries)
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/pmxcfs-go/pmxcfs/qb/qbclient"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "pve2ctl:", err)
		os.Exit(1)
	}
}

func field(s string, n int) []byte {
	b := make([]byte, n)
	copy(b, s)
	return b
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: pve2ctl set|get|log|clusterlog ARGS")
	}
	var op int32
	var req []byte
	switch {
	case args[0] == "set" && len(args) == 3:
		op, req = 4, append(field(args[1], 256), append([]byte(args[2]), 0)...)
	case args[0] == "get" && len(args) == 3:
		op, req = 5, append(field(args[2], 256), field(args[1], 256)...)
	case args[0] == "log" && len(args) == 2:
		ident, tag := "root@pam\x00", "test\x00"
		req = []byte{6, byte(len(ident)), byte(len(tag))}
		req = append(req, ident+tag+args[1]+"\x00"...)
		op = 7
	case args[0] == "clusterlog" && len(args) == 1:
		req = make([]byte, 16)
		binary.LittleEndian.PutUint32(req, 50)
		op, req = 8, append(req, 0)
	default:
		return fmt.Errorf("bad arguments %q", args)
	}
	c, err := qbclient.Connect("pve2")
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Send(op, req)
	if err != nil {
		return err
	}
	if r.Error != 0 {
		return fmt.Errorf("error %d", r.Error)
	}
	os.Stdout.Write(bytes.TrimSuffix(r.Data, []byte{0}))
	return nil
}
