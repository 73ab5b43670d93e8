/*
 * Everything dsfeed.so needs from Kamailio, for bindgen. The build's own
 * defines arrive first through `-include kamailio_defs.h`, so struct layouts
 * match the installed Kamailio exactly.
 */
#include "core/sr_module.h"
#include "core/rpc.h"
#include "core/pt.h"
#include "core/dprint.h"
#include "core/cfg/cfg_struct.h"
#include "core/locking.h"
#include "modules/dispatcher/dispatch.h"

#include "shim.h"
