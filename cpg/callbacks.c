// C trampolines: corosync calls these during cpg_dispatch; they find the Go
// handle through the cpg context (an internal/cs registry key) and call Go.
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <corosync/cpg.h>
#include "_cgo_export.h"

static uintptr_t context_of(cpg_handle_t handle)
{
	void *ctx = NULL;
	if (cpg_context_get(handle, &ctx) != CS_OK)
		return 0;
	return (uintptr_t)ctx;
}

static void deliver_cb(cpg_handle_t handle, const struct cpg_name *group,
		       uint32_t nodeid, uint32_t pid, void *msg, size_t len)
{
	goCpgDeliver(context_of(handle), (char *)group->value, group->length,
		     nodeid, pid, msg, len);
}

static void confchg_cb(cpg_handle_t handle, const struct cpg_name *group,
		       const struct cpg_address *members, size_t nmembers,
		       const struct cpg_address *left, size_t nleft,
		       const struct cpg_address *joined, size_t njoined)
{
	goCpgConfchg(context_of(handle), (char *)group->value, group->length,
		     (struct cpg_address *)members, nmembers,
		     (struct cpg_address *)left, nleft,
		     (struct cpg_address *)joined, njoined);
}

static void totem_confchg_cb(cpg_handle_t handle, struct cpg_ring_id ring_id,
			     uint32_t nmembers, const uint32_t *members)
{
	goCpgTotemConfchg(context_of(handle), ring_id.nodeid, ring_id.seq,
			  (uint32_t *)members, nmembers);
}

static cpg_callbacks_t callbacks = {
	.cpg_deliver_fn = deliver_cb,
	.cpg_confchg_fn = confchg_cb,
};

static cpg_model_v1_data_t model_v1 = {
	.model = CPG_MODEL_V1,
	.cpg_deliver_fn = deliver_cb,
	.cpg_confchg_fn = confchg_cb,
	.cpg_totem_confchg_fn = totem_confchg_cb,
	.flags = CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
};

cs_error_t pmx_cpg_initialize(cpg_handle_t *handle, uintptr_t ctx, int totem)
{
	cs_error_t err = totem ?
		cpg_model_initialize(handle, CPG_MODEL_V1, (cpg_model_data_t *)&model_v1, NULL) :
		cpg_initialize(handle, &callbacks);
	if (err != CS_OK)
		return err;
	err = cpg_context_set(*handle, (void *)ctx);
	if (err != CS_OK)
		cpg_finalize(*handle);
	return err;
}

cs_error_t pmx_cpg_group(cpg_handle_t handle, const char *name, size_t len, int join)
{
	struct cpg_name group = { .length = len };
	memcpy(group.value, name, len);
	return join ? cpg_join(handle, &group) : cpg_leave(handle, &group);
}

cs_error_t pmx_cpg_mcast(cpg_handle_t handle, void *buf, size_t len)
{
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	return cpg_mcast_joined(handle, CPG_TYPE_AGREED, &iov, 1);
}
