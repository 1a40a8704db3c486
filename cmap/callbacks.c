// C trampoline: libcmap calls it during cmap_dispatch with the track's
// user_data, an internal/cs registry key naming the Go callback.
#include <stdint.h>
#include <corosync/cmap.h>
#include "_cgo_export.h"

static void notify_cb(cmap_handle_t handle, cmap_track_handle_t track, int32_t event,
		      const char *key, struct cmap_notify_value new_value,
		      struct cmap_notify_value old_value, void *user_data)
{
	goCmapNotify((uintptr_t)user_data, event, (char *)key,
		     new_value.type, (void *)new_value.data, new_value.len,
		     old_value.type, (void *)old_value.data, old_value.len);
}

cs_error_t pmx_cmap_track_add(cmap_handle_t handle, const char *key, int32_t flags,
			      uintptr_t ctx, cmap_track_handle_t *track)
{
	return cmap_track_add(handle, key, flags, notify_cb, (void *)ctx, track);
}
