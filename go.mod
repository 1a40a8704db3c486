module github.com/pmxcfs-go/pmxcfs

go 1.26.8

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/hanwen/go-fuse/v2 v2.12.1
	github.com/mattn/go-sqlite3 v1.14.53
	github.com/sirupsen/logrus v1.10.2
	golang.org/x/sys v0.28.0
)
