/*
 * verify_walk.c - the state of one verify walk that every step reports into: findings counted
 * and passed to the caller, the rebuilt index (a table of key -> newest version), and freeing the
 * walk. Shared declarations in verify_int.h; the walk itself is described in verify.c.
 *
 * Layer: lifecycle (with the rest of the verify walk). Calls the base layer (allocation) only.
 *
 * Invariants
 *   1. Every finding is counted in the summary (problems or notes) before the callback sees it.
 *   2. The index keeps, per key, the newest version installed; a version at least as new
 *      replaces (recover_install()). Load stays at most 3/4, so a probe always ends.
 *   3. htkv_verify_walk_free() unmaps the segment mappings last used by the index: nothing
 *      reads the index after it.
 */
#include "engine/verify_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

void
htkv_verify_report(struct walk *w, int kind, const char *file, uint64_t off, const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (kind == HTKV_INSPECT_PROBLEM) {
        w->sum->problems++;
    } else {
        w->sum->notes++;
    }
    if (w->issue_fn != NULL) {
        struct htkv_inspect_issue is = {
            .kind = kind, .file = file, .offset = off, .reason = reason
        };
        w->issue_fn(&is, w->ctx);
    }
}

int
htkv_verify_tail_kind(const struct walk *w)
{
    return (w->flags & HTKV_INSPECT_STRICT) ? HTKV_INSPECT_PROBLEM : HTKV_INSPECT_NOTE;
}

static bool
iop_key_eq(const struct iop *a, const struct iop *b)
{
    return a->hash == b->hash && a->klen == b->klen && memcmp(a->key, b->key, a->klen) == 0;
}

static int
iindex_grow(struct iindex *ix)
{
    size_t n = ix->slots ? (ix->mask + 1) * 2 : 1024;
    struct islot *s = htkv_mem_calloc(n, sizeof(*s));
    if (s == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; ix->slots != NULL && i <= ix->mask; i++) {
        if (ix->slots[i].op.key == NULL) {
            continue;
        }
        size_t j = ix->slots[i].op.hash & (n - 1);
        while (s[j].op.key != NULL) {
            j = (j + 1) & (n - 1);
        }
        s[j] = ix->slots[i];
    }
    htkv_mem_free(ix->slots);
    ix->slots = s;
    ix->mask = n - 1;
    return 0;
}

int
htkv_verify_index_install(struct iindex *ix, const struct iop *op)
{
    HTKV_ASSERT(op->key != NULL);
    /* Grow at 3/4 load: linear probing stays short. */
    if (ix->slots == NULL || (ix->used + 1) * 4 > (ix->mask + 1) * 3) {
        int rc = iindex_grow(ix);
        if (rc != 0) {
            return rc;
        }
    }
    size_t j = op->hash & ix->mask;
    while (ix->slots[j].op.key != NULL) {
        if (iop_key_eq(&ix->slots[j].op, op)) {
            if (ix->slots[j].op.version <= op->version) {
                ix->slots[j].op = *op;
            }
            return 0;
        }
        j = (j + 1) & ix->mask;
    }
    ix->slots[j].op = *op;
    ix->used++;
    HTKV_ASSERT(ix->used <= ix->mask);
    return 0;
}

void
htkv_verify_walk_free(struct walk *w)
{
    for (uint32_t s = 0; w->shards != NULL && s < w->shard_count; s++) {
        vec_free(&w->shards[s].ids);
    }
    htkv_mem_free(w->shards);
    htkv_mem_free(w->idx.slots);
    vec_free(&w->parts);
    vec_free(&w->parked);
    vec_free(&w->aborted);
    vec_free(&w->gone);
    vec_free(&w->ends);
    const struct imap *m = w->maps.p;
    for (size_t i = 0; i < w->maps.n; i++) {
        munmap(m[i].p, m[i].len);
    }
    vec_free(&w->maps);
    htkv_mem_free(w->vbuf);
    if (w->dir_fd >= 0) {
        close(w->dir_fd);
    }
}
