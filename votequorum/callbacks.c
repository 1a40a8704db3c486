// C trampoline: libquorum calls it during quorum_dispatch; it finds the Go
// handle through the quorum context (an internal/cs registry key).
#include <stdint.h>
#include <corosync/quorum.h>
#include "_cgo_export.h"

static void notify_cb(quorum_handle_t handle, uint32_t quorate, uint64_t ring_seq,
		      uint32_t n, uint32_t *nodes)
{
	const void *ctx = NULL;
	if (quorum_context_get(handle, &ctx) != CS_OK)
		ctx = NULL;
	goQuorumNotify((uintptr_t)ctx, quorate, ring_seq, n, nodes);
}

static quorum_callbacks_t callbacks = {
	.quorum_notify_fn = notify_cb,
};

cs_error_t pmx_quorum_initialize(quorum_handle_t *handle, uint32_t *type, uintptr_t ctx)
{
	cs_error_t err = quorum_initialize(handle, &callbacks, type);
	if (err != CS_OK)
		return err;
	err = quorum_context_set(*handle, (const void *)ctx);
	if (err != CS_OK)
		quorum_finalize(*handle);
	return err;
}
