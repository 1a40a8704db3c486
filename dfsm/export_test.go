package dfsm

// What the tests of package dfsm_test (which drive engines through dfsmtest, itself an
// importer of dfsm) need to see of the engine's internals.

// MaxBatch is the most messages one Flush covers.
const MaxBatch = maxBatch

// SyncEpoch is the epoch the current sync round's messages must carry.
func (d *DFSM) SyncEpoch() Epoch { return d.syncEpoch }

// QueueLen returns the lengths of the message queue and the sync queue.
func (d *DFSM) QueueLen() (msgQueue, syncQueue int) { return len(d.msgQueue), len(d.syncQueue) }
