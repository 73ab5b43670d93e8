/*
 * The C half of kamailio-sys: Kamailio's function-like macros (logging, shm,
 * locks, cfg_update) turned into functions Rust can call, and the types of
 * the dispatcher entry points dsfeed.so looks up with dlsym.
 */
#ifndef DSFEED_SHIM_H
#define DSFEED_SHIM_H

#include <stddef.h>

#include "core/locking.h"
#include "modules/dispatcher/dispatch.h"

/* PARAM_USE_FUNC uses sizeof, which bindgen cannot evaluate; shim.c checks it. */
#define DSFEED_PARAM_USE_FUNC 0x80000000U

/* dispatcher.so's loader and list root; shim.c checks them against dispatch.h. */
typedef int (*ds_load_list_f)(char *lfile);
typedef ds_set_t *(*ds_get_list_f)(void);

/* Non-zero when a message at `level` (L_ERR..L_DBG) would be printed. */
int dsfeed_log_enabled(int level);
/* LM_* for Rust: logs "dsfeed [target]: msg" at `level` if enabled. */
void dsfeed_log(int level, const char *target, const char *msg);

void *dsfeed_shm_malloc(size_t size);
void dsfeed_shm_free(void *p);

void dsfeed_lock_init(gen_lock_t *lock);
void dsfeed_lock_get(gen_lock_t *lock);
void dsfeed_lock_release(gen_lock_t *lock);

/* cfg_update(): a process with its own loop calls it at the top of each turn. */
void dsfeed_cfg_update(void);

#endif
