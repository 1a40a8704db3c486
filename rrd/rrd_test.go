package rrd

import (
	"path/filepath"
	"testing"
	"time"
)

func TestCreateUpdateErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "x.rrd")
	if err := Update(file, "1700000000:1"); err == nil {
		t.Error("update of a missing file succeeded")
	}
	if err := Create(file, 60, time.Unix(1700000000, 0), []string{"DS:a:GAUGE:120:0:U", "RRA:AVERAGE:0.5:1:10"}); err != nil {
		t.Fatal(err)
	}
	if err := Update(file, "1700000060:1"); err != nil {
		t.Fatal(err)
	}
	// librrd refuses a timestamp that is not newer than the last update.
	if err := Update(file, "1700000060:2"); err == nil {
		t.Error("update with an old timestamp succeeded")
	}
	if err := DaemonConnect("unix:" + filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Error("connect to a missing socket succeeded")
	}
}
