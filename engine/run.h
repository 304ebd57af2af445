/*
 * run.h - sorted runs (flat.h: a shard's flat copy of its trie) and merge paths over them
 * (merge.h), for the callers that use both: ordered reads (view.c) and the tests' hook
 * htkv_run_eager.
 */
#ifndef HTKV_ENGINE_RUN_H
#define HTKV_ENGINE_RUN_H

#include "engine/flat.h"
#include "engine/merge.h"

#endif /* HTKV_ENGINE_RUN_H */
