/*
 * testhook.h - the crash-test hook: a named point that a crash test may kill the process at.
 *
 * Layer: base. Depends on internal.h only; any layer may call htkv_compact_hook_call().
 *
 * Invariants
 *   1. NULL in production: a call is one predicted-not-taken branch and does nothing.
 *   2. Set by a test before it opens the store and not changed while one is open (not
 *      thread-safe to change).
 */
#ifndef HTKV_ENGINE_TESTHOOK_H
#define HTKV_ENGINE_TESTHOOK_H

#include "engine/internal.h"

/*
 * Test hook, NULL in production: called with the name of each point that a crash test kills
 * at: compaction's ("fence-synced", "step", "copies-synced", "dropped"), hint writing's
 * ("hint-written") and snapshot writing's and restore's ("snapshot-written", "restore-built",
 * "restore-committed"). The name is kept from when only compaction called it: tests set it.
 */
extern void (*htkv_compact_hook)(const char *point);

static inline void
htkv_compact_hook_call(const char *point)
{
    if (HTKV_UNLIKELY(htkv_compact_hook != NULL)) {
        htkv_compact_hook(point);
    }
}

#endif
