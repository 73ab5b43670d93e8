/*
 * Kamailio's macros as functions. Compiled with the same defines as the
 * bindings (see build/main.rs), so the memory API and lock types are the
 * ones the running Kamailio uses.
 */
#include "core/dprint.h"
#include "core/mem/shm.h"
#include "core/cfg/cfg_struct.h"

#include "shim.h"

_Static_assert(DSFEED_PARAM_USE_FUNC == PARAM_USE_FUNC, "PARAM_USE_FUNC changed");
_Static_assert(__builtin_types_compatible_p(__typeof__(&ds_load_list), ds_load_list_f),
		"ds_load_list in dispatch.h no longer matches ds_load_list_f");
_Static_assert(__builtin_types_compatible_p(__typeof__(&ds_get_list), ds_get_list_f),
		"ds_get_list in dispatch.h no longer matches ds_get_list_f");

int dsfeed_log_enabled(int level)
{
	return is_printable(level);
}

void dsfeed_log(int level, const char *target, const char *msg)
{
	LOG_FN(DEFAULT_FACILITY, level, "dsfeed ", "[%s]: %s\n", target, msg);
}

void *dsfeed_shm_malloc(size_t size)
{
	return shm_malloc(size);
}

void dsfeed_shm_free(void *p)
{
	shm_free(p);
}

void dsfeed_lock_init(gen_lock_t *lock)
{
	lock_init(lock);
}

void dsfeed_lock_get(gen_lock_t *lock)
{
	lock_get(lock);
}

void dsfeed_lock_release(gen_lock_t *lock)
{
	lock_release(lock);
}

void dsfeed_cfg_update(void)
{
	cfg_update();
}
