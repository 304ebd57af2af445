/*
 * testhook.c - the one definition of the crash-test hook (see testhook.h).
 *
 * Layer: base. Calls nothing.
 */
#include "engine/testhook.h"

void (*htkv_compact_hook)(const char *point) = NULL;
