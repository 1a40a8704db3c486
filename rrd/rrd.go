// Package rrd is a thin cgo binding to librrd: create an RRD file, update it
// directly, or update it through rrdcached. It knows nothing about pmxcfs keys.
//
// librrd keeps its error text per OS thread, so every call clears the error,
// does the work and reads the error in one C call; Go may move a goroutine to
// another thread between two cgo calls.
package rrd

/*
#cgo LDFLAGS: -lrrd
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <rrd.h>
#include <rrd_client.h>

static char *pmx_rrd_errdup(int rc) {
	if (rc == 0) return NULL;
	const char *msg = rrd_get_error();
	return strdup(msg && *msg ? msg : "unknown rrd error");
}

static char *pmx_rrd_create(const char *file, unsigned long step, time_t start, int argc, const char **argv) {
	rrd_clear_error();
	return pmx_rrd_errdup(rrd_create_r(file, step, start, argc, argv));
}

static char *pmx_rrd_update(const char *file, const char *value) {
	const char *argv[] = {value, NULL};
	rrd_clear_error();
	return pmx_rrd_errdup(rrd_update_r(file, NULL, 1, argv));
}

static int pmx_rrdc_update(const char *file, const char *value) {
	const char *argv[] = {value, NULL};
	return rrdc_update(file, 1, argv);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"
)

func takeError(msg *C.char) error {
	if msg == nil {
		return nil
	}
	defer C.free(unsafe.Pointer(msg))
	return errors.New(C.GoString(msg))
}

// Create makes a new RRD file with the given step (seconds), start time (the
// time of the "last update"; later updates must be newer) and DS/RRA
// definitions such as "DS:cpu:GAUGE:120:0:U" or "RRA:AVERAGE:0.5:1:1440".
func Create(file string, step uint64, start time.Time, defs []string) error {
	cFile := C.CString(file)
	defer C.free(unsafe.Pointer(cFile))
	argv := make([]*C.char, len(defs)+1)
	for i, d := range defs {
		argv[i] = C.CString(d)
	}
	defer func() {
		for _, p := range argv[:len(defs)] {
			C.free(unsafe.Pointer(p))
		}
	}()
	// argv lives in C memory so cgo's pointer rules are met.
	cArgv := (**C.char)(C.malloc(C.size_t(len(argv)) * C.size_t(unsafe.Sizeof(argv[0]))))
	defer C.free(unsafe.Pointer(cArgv))
	copy(unsafe.Slice(cArgv, len(argv)), argv)
	return takeError(C.pmx_rrd_create(cFile, C.ulong(step), C.time_t(start.Unix()), C.int(len(defs)), cArgv))
}

// Update writes one "timestamp:v1:v2:..." value into file with librrd itself.
func Update(file, value string) error {
	cFile, cValue := C.CString(file), C.CString(value)
	defer C.free(unsafe.Pointer(cFile))
	defer C.free(unsafe.Pointer(cValue))
	return takeError(C.pmx_rrd_update(cFile, cValue))
}

// librrd's client keeps one global connection; this lock keeps our users
// from interleaving on it.
var daemonMu sync.Mutex

// DaemonConnect connects to rrdcached at address (e.g.
// "unix:/var/run/rrdcached.sock"); it is a no-op when already connected there.
func DaemonConnect(address string) error {
	cAddr := C.CString(address)
	defer C.free(unsafe.Pointer(cAddr))
	daemonMu.Lock()
	defer daemonMu.Unlock()
	if rc := C.rrdc_connect(cAddr); rc != 0 {
		return fmt.Errorf("rrdcached connect %s: status %d", address, int(rc))
	}
	return nil
}

// DaemonUpdate sends one value for file to the connected rrdcached.
func DaemonUpdate(file, value string) error {
	cFile, cValue := C.CString(file), C.CString(value)
	defer C.free(unsafe.Pointer(cFile))
	defer C.free(unsafe.Pointer(cValue))
	daemonMu.Lock()
	defer daemonMu.Unlock()
	if rc := C.pmx_rrdc_update(cFile, cValue); rc != 0 {
		return fmt.Errorf("rrdcached update %s: status %d", file, int(rc))
	}
	return nil
}

// DaemonDisconnect drops the rrdcached connection, if any.
func DaemonDisconnect() {
	daemonMu.Lock()
	defer daemonMu.Unlock()
	C.rrdc_disconnect()
}
