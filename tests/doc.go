// Package tests holds cluster-level tests that run several nodes (corosync and
// pmxcfs) on one machine with the bench in ./bench. They need root, corosync
// and /dev/fuse, and skip otherwise.
package tests
