/*
 * db.c - the public engine API: configuration, point operations, htkv_write, asynchronous
 * writes, flush, stats and compaction on demand (store layer). Opening and closing: open.c;
 * batches: batch.c.
 *
 * Design. Every call enters an EBR critical section first; that is both what protects lock-free
 * readers from reclaimed memory and how htkv_close() learns that no call is still running: it
 * raises `closing`, then waits for every slot to be idle. Calls that see `closing` return
 * HTKV_ECLOSED.
 *
 * Invariants
 *   1. After htkv_close() has waited for the EBR slots, no call touches the store any more.
 *   2. A read returns only versions its shard has published (visible), never a pending one.
 *   3. A version chain is newest first: each entry's prev holds a version no larger (equal
 *      only for a key a batch wrote twice: all its records share the batch's version).
 *   4. What reaches db_write1()/db_async1() was checked: a key of 1 to HTKV_KEY_MAX bytes, a
 *      value within max_value_bytes, a writable store, REC_SET or REC_DEL; a batch handed to a
 *      worker has at least one operation (its first names the worker).
 * May call: the shard layer, batches, workers.
 */
#include "engine/store.h"

#include "uring/ur_fault.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/batch.h"
#include "engine/cold.h"
#include "engine/hash.h"
#include "engine/log.h"
#include "engine/rec.h"
#include "engine/worker.h"

/* ---- configuration --------------------------------------------------------------------------- */

void
htkv_config_init(htkv_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    memset(cfg, 0, sizeof(*cfg));
    cfg->data_dir = ".hightower";
    cfg->worker_threads = 0; /* see htkv.h: inline is the faster default for sync callers */
    cfg->shard_count = 0;
    cfg->max_segment_bytes = 64ull << 20;
    cfg->sync_mode = HTKV_SYNC_INTERVAL;
    cfg->fsync_interval_ms = 25;
    cfg->compaction_interval_ms = 60000;
    cfg->compaction_min_garbage_ratio = 0.5;
    cfg->emit_snapshot_after_compaction = 1;
    cfg->io_backend = HTKV_IO_AUTO;
    cfg->queue_depth = 256;
    cfg->memory_budget_bytes = 0;
    cfg->max_value_bytes = HTKV_VALUE_MAX_DEFAULT;
    cfg->read_only = 0;
    cfg->create_if_missing = 1;
    cfg->recovery = HTKV_RECOVERY_STRICT;
    cfg->verify_checksums = 1;
    cfg->hint_files = 1;
    cfg->sorted_runs = 1;
}

void
htkv_db_log(struct htkv_db *db, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    htkv_vlog(&db->env.log, level, fmt, ap);
    va_end(ap);
}

/* ---- point operations ------------------------------------------------------------------------ */

static inline int
check_write(struct htkv_db *db)
{
    if (HTKV_UNLIKELY(db->read_only)) {
        return HTKV_EREADONLY;
    }
    return 0;
}

/*
 * Has this thread handed asynchronous writes to workers (of any store)? Then its synchronous
 * writes queue behind them, or run on it only when the worker is parked (htkv_worker_parked()),
 * so that its writes apply in its order. A thread that never did runs its synchronous writes
 * outside HTKV_SYNC_ALWAYS itself, as inline mode does: handing over a write the caller waits
 * for buys it nothing but two context switches. In HTKV_SYNC_ALWAYS the workers' group syncs
 * take every write.
 */
static _Thread_local bool db_async_thread;

/* Does a synchronous write of the worker owning @p shard run on the calling thread? */
static inline bool
db_write_here(struct htkv_db *db, uint32_t shard)
{
    return db->nworkers == 0 || (db->cfg.sync_mode != HTKV_SYNC_ALWAYS &&
                                 (!db_async_thread || htkv_worker_parked(db, shard)));
}

/* Puts and deletes since this thread's last timed one: every METRICS_WRITE_SAMPLE-th is timed
 * (its start, or 0: only counted). */
static _Thread_local uint32_t write_tick;

static inline uint64_t
db_write_t0(void)
{
    return HTKV_UNLIKELY((++write_tick & (METRICS_WRITE_SAMPLE - 1)) == 0) ? htkv_now_ns() : 0;
}

/* One put or delete: inline under the shard lock (db_write_here()), or through the owning
 * worker. */
static int
db_write1(struct htkv_db *db, uint8_t type, const void *key, uint32_t klen, const void *val,
          uint32_t vlen, uint64_t hash)
{
    /* Invariant 4 (the fast path: debug builds only). */
    HTKV_DASSERT(klen >= 1 && klen <= HTKV_KEY_MAX && vlen <= db->cfg.max_value_bytes);
    HTKV_DASSERT((type == REC_SET || (type == REC_DEL && vlen == 0)) && !db->read_only);
    uint64_t t0 = db_write_t0();
    uint32_t shard = db->nworkers > 0 ? db_shard_of(db, hash) : 0; /* inline: db_put1 finds it */
    if (db_write_here(db, shard)) {
        uint64_t version;
        return db_put1(db, type, key, klen, val, vlen, hash, &version, t0);
    }
    struct shard_metrics *m = &db_shard(db, shard)->metrics;
    struct wreq r = { .kind = type == REC_SET ? WREQ_PUT : WREQ_DEL,
                      .klen = klen,
                      .vlen = vlen,
                      .shard = shard,
                      .key = key,
                      .val = val,
                      .hash = hash,
                      .hist = type == REC_SET ? &m->put : &m->del,
                      .t0_ns = t0 };
    return htkv_worker_submit(db, shard, &r);
}

int
htkv_put(htkv_db *db, const void *key, size_t klen, const void *val, size_t vlen)
{
    if (HTKV_UNLIKELY(db == NULL)) {
        return htkv_einval(__func__);
    }
    int rc = check_key(key, klen);
    if (rc != 0) {
        return rc;
    }
    if (HTKV_UNLIKELY(val == NULL && vlen > 0)) {
        return htkv_einval(__func__);
    }
    if (HTKV_UNLIKELY(vlen > db->cfg.max_value_bytes)) {
        return HTKV_ETOOBIG;
    }
    rc = check_write(db);
    if (rc != 0) {
        return rc;
    }
    unsigned slot;
    rc = db_enter(db, &slot);
    if (rc != 0) {
        return rc;
    }
    uint64_t hash = htkv_hash(key, klen, db->hash_seed);
    rc = db_write1(db, REC_SET, key, (uint32_t)klen, val, (uint32_t)vlen, hash);
    db_exit(db, slot);
    return rc;
}

int
htkv_delete(htkv_db *db, const void *key, size_t klen)
{
    if (HTKV_UNLIKELY(db == NULL)) {
        return htkv_einval(__func__);
    }
    int rc = check_key(key, klen);
    if (rc == 0) {
        rc = check_write(db);
    }
    if (rc != 0) {
        return rc;
    }
    unsigned slot;
    rc = db_enter(db, &slot);
    if (rc != 0) {
        return rc;
    }
    uint64_t hash = htkv_hash(key, klen, db->hash_seed);
    rc = db_write1(db, REC_DEL, key, (uint32_t)klen, NULL, 0, hash);
    db_exit(db, slot);
    return rc;
}

/* Maximum lock-free retries before a reader falls back to the shard lock (see db_find). */
#define FIND_RETRIES 4

/*
 * The entry a reader should see for @p key: the newest one not newer than the shard's visible
 * version. Inside an EBR section. The writer cuts an entry's link to older versions only after
 * publishing a visible version >= the entry's, so a chain that ends too early means `visible`
 * moved on: re-read it. Under a relentless stream of writes to the same key, fall back to the
 * shard's lock after a few tries so that the read always finishes. *@p absent is set when the
 * index has no entry for the key at all (left as it is otherwise).
 */
static struct hidx_ent *
db_find(struct htkv_db *db, uint64_t hash, const void *key, uint32_t klen, bool *absent)
{
    uint32_t sid = db_shard_of(db, hash);
    struct shard_ro *ro = &db->ro[sid];
    for (int tries = 0; tries < FIND_RETRIES; tries++) {
        uint64_t vis = atomic_load_explicit(&ro->visible, memory_order_acquire);
        struct hidx_ent *e = htkv_hidx_find(&ro->shard->idx, hash, key, klen);
        if (e == NULL) {
            *absent = true; /* no entry: the key may be cold (cold.h) */
            return NULL;
        }
        if (HTKV_LIKELY(e->version <= vis)) {
            return e;
        }
        struct hidx_ent *p = atomic_load_explicit(&e->prev, memory_order_acquire);
        HTKV_DASSERT(p == NULL || p->version <= e->version); /* invariant 3 */
        while (p != NULL && p->version > vis) {
            struct hidx_ent *older = atomic_load_explicit(&p->prev, memory_order_acquire);
            HTKV_DASSERT(older == NULL || older->version <= p->version);
            p = older;
        }
        if (p != NULL) {
            return p;
        }
        if (atomic_load_explicit(&ro->visible, memory_order_acquire) == vis) {
            return NULL; /* the key did not exist at `vis` */
        }
    }
    struct shard *sh = ro->shard;
    pthread_mutex_lock(&sh->lock);
    uint64_t vis = atomic_load_explicit(&ro->visible, memory_order_relaxed);
    struct hidx_ent *e = htkv_hidx_find(&sh->idx, hash, key, klen);
    *absent = e == NULL;
    while (e != NULL && e->version > vis) {
        struct hidx_ent *older = atomic_load_explicit(&e->prev, memory_order_relaxed);
        HTKV_ASSERT(older == NULL || older->version <= e->version); /* the slow path: always */
        e = older;
    }
    pthread_mutex_unlock(&sh->lock);
    return e; /* stays valid: we are still inside the EBR section */
}

/*
 * What a read that found no entry for its key answers: HTKV_ENOTFOUND, or HTKV_ECORRUPT when an
 * entry of another key with the same 64-bit hash holds a record that fails its check. Two keys
 * share a hash all but never, but a record whose key bytes were damaged does: recovery from hint
 * files installs it under the hash the hint recorded without reading the key, so the key it was
 * written for would otherwise read as absent (or, with an older version left, read that one: see
 * twin_check() in engine/recover.c). Inside the caller's EBR section; costs one more probe of the
 * slots a miss has just read.
 */
static int
db_miss(struct htkv_db *db, uint64_t hash, const void *key, uint32_t klen)
{
    struct shard *sh = db_shard(db, db_shard_of(db, hash));
    struct hidx_ent *t = htkv_hidx_find_hash(&sh->idx, hash);
    if (HTKV_LIKELY(t == NULL) || hidx_ent_key_eq(t, key, klen)) {
        return HTKV_ENOTFOUND; /* none, or the key itself, newer than this read */
    }
    if (htkv_ent_record_ok(t)) {
        return HTKV_ENOTFOUND; /* a true collision */
    }
    htkv_set_error("%s: the record at offset %llu, of a key with the hash of the key read, is "
                   "damaged",
                   t->seg->path, (unsigned long long)t->off);
    return HTKV_ECORRUPT;
}

/* Check the record behind @p e (db_ent_check()) and return its value bytes. 0 or
 * HTKV_ECORRUPT. */
static int
db_value(struct htkv_db *db, struct hidx_ent *e, const unsigned char **val, uint32_t *vlen)
{
    const unsigned char *rec = hidx_ent_rec(e);
    HTKV_DASSERT(!e->del && e->rec_bytes >= REC_HDR_BYTES + e->key_len);
    *vlen = e->rec_bytes - REC_HDR_BYTES - e->key_len;
    *val = rec + REC_HDR_BYTES + e->key_len;
    return db_ent_check(db, e);
}

/* What a read found: its value's bytes (in a segment mapping) and version. */
struct found {
    const unsigned char *val;
    uint32_t vlen;
    uint64_t version;
};

/* A cold key (no index entry; cold.h): 0 and *@p f, HTKV_ENOTFOUND, HTKV_ECORRUPT or COLD_HOT
 * (it has an entry now). Inside the caller's EBR section. */
static int
db_cold(struct htkv_db *db, uint64_t hash, const void *key, uint32_t klen, struct found *f)
{
    struct cold_hit hit;
    int rc = htkv_cold_lookup(db, db_shard(db, db_shard_of(db, hash)), hash, key, klen, &hit);
    if (rc == HTKV_ENOTFOUND) {
        return db_miss(db, hash, key, klen);
    }
    if (rc == 0 && hit.del) {
        return HTKV_ENOTFOUND;
    }
    if (rc == 0) {
        *f = (struct found){ .val = cold_hit_value(&hit),
                             .vlen = hit.val_len,
                             .version = hit.version };
        htkv_cold_touch(db_shard(db, db_shard_of(db, hash)), hash, key, klen);
    }
    return rc;
}

/*
 * The value of @p key a read sees, in memory or cold: 0 and *@p f; HTKV_ENOTFOUND;
 * HTKV_ECORRUPT. Inside the caller's EBR section.
 */
static int
db_lookup(struct htkv_db *db, uint64_t hash, const void *key, uint32_t klen, struct found *f)
{
    for (;;) {
        bool absent = false;
        struct hidx_ent *e = db_find(db, hash, key, klen, &absent);
        if (e != NULL) {
            if (db->env.budget_share != 0 && !atomic_load_explicit(&e->ref, memory_order_relaxed)) {
                atomic_store_explicit(&e->ref, 1, memory_order_relaxed); /* CLOCK: read lately */
            }
            if (e->del) {
                return HTKV_ENOTFOUND;
            }
            f->version = e->version;
            return db_value(db, e, &f->val, &f->vlen);
        }
        if (!absent || db->env.budget_share == 0) {
            return db_miss(db, hash, key, klen);
        }
        int rc = db_cold(db, hash, key, klen, f);
        if (rc != COLD_HOT) {
            return rc;
        }
    }
}

/* Gets since this thread's last timed one: every METRICS_GET_SAMPLE-th get is timed. */
static _Thread_local unsigned get_tick;

int
htkv_get_version(htkv_db *db, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen,
                 uint64_t *version)
{
    if (version != NULL) {
        *version = 0;
    }
    if (HTKV_UNLIKELY(db == NULL || (buf == NULL && cap > 0))) {
        return htkv_einval(__func__);
    }
    int rc = check_key(key, klen);
    if (rc != 0) {
        return rc;
    }
    uint64_t t0 = 0;
    if (HTKV_UNLIKELY((++get_tick & (METRICS_GET_SAMPLE - 1)) == 0)) {
        t0 = htkv_now_ns();
    }
    unsigned slot;
    rc = db_enter(db, &slot);
    if (rc != 0) {
        return rc;
    }
    uint64_t hash = htkv_hash(key, klen, db->hash_seed);
    struct found f;
    rc = db_lookup(db, hash, key, (uint32_t)klen, &f);
    /* Invariant 2: what was found is published (visible only grows, so it still covers it). */
    HTKV_DASSERT(rc != 0 ||
                 f.version <= atomic_load_explicit(&db->ro[db_shard_of(db, hash)].visible,
                                                   memory_order_relaxed));
    if (rc != 0) {
        goto out;
    }
    if (vlen != NULL) {
        *vlen = f.vlen;
    }
    if (version != NULL) {
        *version = f.version; /* also with HTKV_ETOOSMALL: a version check needs no buffer */
    }
    if (f.vlen > cap) {
        rc = HTKV_ETOOSMALL;
        goto out;
    }
    if (f.vlen > 0) {
        memcpy(buf, f.val, f.vlen);
    }
out:
    htkv_ebr_count_read(&db->ebr, slot);
    if (HTKV_UNLIKELY(t0 != 0)) {
        uint64_t now = htkv_now_ns();
        struct shard *sh = db_shard(db, db_shard_of(db, hash));
        htkv_hist_record_shared(&sh->metrics.get, now > t0 ? now - t0 : 0);
    }
    db_exit(db, slot);
    return rc;
}

int
htkv_get(htkv_db *db, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
    return htkv_get_version(db, key, klen, buf, cap, vlen, NULL);
}

int
htkv_get_alloc(htkv_db *db, const void *key, size_t klen, void **val, size_t *vlen)
{
    if (val == NULL) {
        return htkv_einval(__func__);
    }
    *val = NULL;
    if (HTKV_UNLIKELY(db == NULL)) {
        return htkv_einval(__func__);
    }
    int rc = check_key(key, klen);
    if (rc != 0) {
        return rc;
    }
    unsigned slot;
    rc = db_enter(db, &slot);
    if (rc != 0) {
        return rc;
    }
    uint64_t hash = htkv_hash(key, klen, db->hash_seed);
    struct found f;
    rc = db_lookup(db, hash, key, (uint32_t)klen, &f);
    if (rc == 0) {
        void *copy = htkv_mem_alloc(f.vlen > 0 ? f.vlen : 1);
        if (copy == NULL) {
            rc = -ENOMEM;
        } else {
            memcpy(copy, f.val, f.vlen);
            *val = copy;
            if (vlen != NULL) {
                *vlen = f.vlen;
            }
        }
    }
    db_exit(db, slot);
    return rc;
}

int
htkv_contains(htkv_db *db, const void *key, size_t klen)
{
    if (HTKV_UNLIKELY(db == NULL)) {
        return htkv_einval(__func__);
    }
    int rc = check_key(key, klen);
    if (rc != 0) {
        return rc;
    }
    unsigned slot;
    rc = db_enter(db, &slot);
    if (rc != 0) {
        return rc;
    }
    uint64_t hash = htkv_hash(key, klen, db->hash_seed);
    struct found f;
    rc = db_lookup(db, hash, key, (uint32_t)klen, &f);
    rc = rc == 0 ? 1 : (rc == HTKV_ENOTFOUND ? 0 : rc);
    db_exit(db, slot);
    return rc;
}

/* The shard whose worker runs a batch: that of its first operation (any fixed choice works;
 * the worker takes the locks of every shard the batch touches). */
static uint32_t
db_batch_shard(struct htkv_db *db, const htkv_batch *b)
{
    HTKV_ASSERT(b->nops > 0); /* invariant 4 */
    const struct batch_op *op = &b->ops[0];
    HTKV_ASSERT(op->data_off + op->klen <= b->data_len);
    return db_shard_of(db, htkv_hash(b->data + op->data_off, op->klen, db->hash_seed));
}

/*
 * Before a batch over shards of several workers, from a thread that has written asynchronously:
 * mark every worker owning one of its shards except the one that runs it (that of @p home), so
 * that the thread's earlier writes to those shards take their versions first (htkv_worker_mark();
 * the batch's own worker takes them in queue order). A worker thread (a done callback) marks
 * nothing: it may not wait. 0 or HTKV_ECLOSED.
 */
static int
db_batch_order(struct htkv_db *db, const htkv_batch *b, uint32_t home)
{
    if (db->nworkers < 2 || !db_async_thread || htkv_worker_thread(db)) {
        return 0;
    }
    uint64_t marked[256 / 64] = { 0 }; /* worker_threads <= 256 */
    marked[(home % db->nworkers) / 64] |= 1ull << (home % db->nworkers % 64);
    for (size_t i = 0; i < b->nops; i++) {
        const struct batch_op *op = &b->ops[i];
        uint32_t shard =
            db_shard_of(db, htkv_hash(b->data + op->data_off, op->klen, db->hash_seed));
        uint32_t w = shard % db->nworkers;
        if ((marked[w / 64] & (1ull << (w % 64))) != 0) {
            continue;
        }
        marked[w / 64] |= 1ull << (w % 64);
        int rc = htkv_worker_mark(db, shard);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* Record an inline batch's latency in its first shard's histogram (any thread: atomic adds).
 * A batch without operations touches no shard and is not counted. */
static void
db_batch_record(struct htkv_db *db, const htkv_batch *b, uint64_t t0_ns)
{
    if (b->nops == 0) {
        return;
    }
    uint64_t now = htkv_now_ns();
    struct shard *sh = db_shard(db, db_batch_shard(db, b));
    htkv_hist_record_shared(&sh->metrics.batch, now > t0_ns ? now - t0_ns : 0);
}

int
htkv_write(htkv_db *db, htkv_batch *b)
{
    if (db == NULL || b == NULL) {
        return htkv_einval(__func__);
    }
    int rc = check_write(db);
    if (rc != 0) {
        return rc;
    }
    for (size_t i = 0; i < b->nops; i++) {
        if (b->ops[i].vlen > db->cfg.max_value_bytes) {
            return HTKV_ETOOBIG;
        }
    }
    uint64_t t0 = htkv_now_ns();
    unsigned slot;
    rc = db_enter(db, &slot);
    if (rc != 0) {
        return rc;
    }
    uint64_t version = 0;
    uint32_t shard = db->nworkers > 0 && b->nops > 0 ? db_batch_shard(db, b) : 0;
    rc = b->nops > 0 ? db_batch_order(db, b, shard) : 0;
    if (rc == 0 && (b->nops == 0 || db_write_here(db, shard))) {
        rc = htkv_batch_apply(db, b, &version);
        db_batch_record(db, b, t0);
    } else if (rc == 0) {
        struct wreq r = {
            .kind = WREQ_BATCH, .batch = b, .hist = &db_shard(db, shard)->metrics.batch, .t0_ns = t0
        };
        rc = htkv_worker_submit(db, shard, &r);
        version = r.version;
    }
    if (rc == 0) {
        b->version = version;
    }
    db_exit(db, slot);
    return rc;
}

/* ---- asynchronous writes --------------------------------------------------------------------- */

static int
db_async_check(struct htkv_db *db, htkv_done_fn done)
{
    if (db == NULL || done == NULL) {
        return htkv_einval(__func__);
    }
    return check_write(db);
}

/* Inline mode: run the write now and report through the callback. */
static int
db_async_inline(int rc, uint64_t version, htkv_done_fn done, void *ctx)
{
    done(rc, version, ctx);
    return 0;
}

static int
db_async1(htkv_db *db, uint8_t type, const void *key, size_t klen, const void *val, size_t vlen,
          htkv_done_fn done, void *ctx)
{
    HTKV_ASSERT(klen >= 1 && klen <= HTKV_KEY_MAX && vlen <= db->cfg.max_value_bytes); /* inv. 4 */
    HTKV_ASSERT((type == REC_SET || (type == REC_DEL && vlen == 0)) && !db->read_only);
    unsigned slot;
    int rc = db_enter(db, &slot);
    if (rc != 0) {
        return rc;
    }
    uint64_t hash = htkv_hash(key, klen, db->hash_seed);
    uint64_t t0 = db_write_t0();
    if (db->nworkers == 0) {
        uint64_t version = 0;
        rc = db_put1(db, type, key, (uint32_t)klen, val, (uint32_t)vlen, hash, &version, t0);
        db_exit(db, slot);
        return db_async_inline(rc, version, done, ctx);
    }
    struct wreq *r = htkv_mem_alloc(sizeof(*r) + klen + vlen);
    if (r == NULL) {
        db_exit(db, slot);
        return -ENOMEM;
    }
    db_async_thread = true;
    unsigned char *copy = (unsigned char *)(r + 1);
    memcpy(copy, key, klen);
    if (vlen > 0) {
        memcpy(copy + klen, val, vlen);
    }
    uint32_t shard = db_shard_of(db, hash);
    *r = (struct wreq){ .kind = type == REC_SET ? WREQ_PUT : WREQ_DEL,
                        .heap = true,
                        .klen = (uint32_t)klen,
                        .vlen = (uint32_t)vlen,
                        .shard = shard,
                        .key = copy,
                        .val = copy + klen,
                        .hash = hash,
                        .done = done,
                        .ctx = ctx,
                        .hist = type == REC_SET ? &db_shard(db, shard)->metrics.put
                                                : &db_shard(db, shard)->metrics.del,
                        .t0_ns = t0 };
    rc = htkv_worker_submit(db, shard, r);
    if (rc != 0) {
        htkv_mem_free(r);
    }
    db_exit(db, slot);
    return rc;
}

int
htkv_put_async(htkv_db *db, const void *key, size_t klen, const void *val, size_t vlen,
               htkv_done_fn done, void *ctx)
{
    int rc = db_async_check(db, done);
    if (rc == 0) {
        rc = check_key(key, klen);
    }
    if (rc == 0 && val == NULL && vlen > 0) {
        rc = -EINVAL;
    }
    if (rc == 0 && vlen > db->cfg.max_value_bytes) {
        rc = HTKV_ETOOBIG;
    }
    return rc != 0 ? rc : db_async1(db, REC_SET, key, klen, val, vlen, done, ctx);
}

int
htkv_delete_async(htkv_db *db, const void *key, size_t klen, htkv_done_fn done, void *ctx)
{
    int rc = db_async_check(db, done);
    if (rc == 0) {
        rc = check_key(key, klen);
    }
    return rc != 0 ? rc : db_async1(db, REC_DEL, key, klen, NULL, 0, done, ctx);
}

/* Deep copy of @p b for an asynchronous write. */
static int
batch_copy(const htkv_batch *b, htkv_batch **out)
{
    int rc = htkv_batch_create(out);
    if (rc != 0) {
        return rc;
    }
    htkv_batch *c = *out;
    c->ops = htkv_mem_alloc((b->nops > 0 ? b->nops : 1) * sizeof(*c->ops));
    c->data = htkv_mem_alloc(b->data_len > 0 ? b->data_len : 1);
    if (c->ops == NULL || c->data == NULL) {
        htkv_batch_destroy(c);
        *out = NULL;
        return -ENOMEM;
    }
    if (b->nops > 0) {
        memcpy(c->ops, b->ops, b->nops * sizeof(*c->ops));
    }
    if (b->data_len > 0) {
        memcpy(c->data, b->data, b->data_len);
    }
    c->nops = c->ops_cap = b->nops;
    c->ncount = b->ncount;
    c->data_len = c->data_cap = b->data_len;
    c->rec_bytes = b->rec_bytes;
    HTKV_ASSERT(c->ncount <= c->nops && b->fixed_version == 0); /* htkv_submit() is synchronous */
    return 0;
}

int
htkv_write_async(htkv_db *db, htkv_batch *b, htkv_done_fn done, void *ctx)
{
    int rc = db_async_check(db, done);
    if (rc != 0 || b == NULL) {
        return rc != 0 ? rc : -EINVAL;
    }
    for (size_t i = 0; i < b->nops; i++) {
        if (b->ops[i].vlen > db->cfg.max_value_bytes) {
            return HTKV_ETOOBIG;
        }
    }
    unsigned slot;
    rc = db_enter(db, &slot);
    if (rc != 0) {
        return rc;
    }
    uint64_t t0 = htkv_now_ns();
    if (db->nworkers == 0 || b->nops == 0) {
        uint64_t version = 0;
        rc = htkv_batch_apply(db, b, &version);
        db_batch_record(db, b, t0);
        db_exit(db, slot);
        return db_async_inline(rc, version, done, ctx);
    }
    htkv_batch *copy;
    rc = batch_copy(b, &copy);
    struct wreq *r = rc == 0 ? htkv_mem_alloc(sizeof(*r)) : NULL;
    if (r == NULL) {
        htkv_batch_destroy(rc == 0 ? copy : NULL);
        db_exit(db, slot);
        return -ENOMEM;
    }
    uint32_t shard = db_batch_shard(db, copy);
    rc = db_batch_order(db, copy, shard);
    if (rc != 0) {
        htkv_batch_destroy(copy);
        htkv_mem_free(r);
        db_exit(db, slot);
        return rc;
    }
    db_async_thread = true;
    *r = (struct wreq){ .kind = WREQ_BATCH,
                        .heap = true,
                        .batch = copy,
                        .done = done,
                        .ctx = ctx,
                        .hist = &db_shard(db, shard)->metrics.batch,
                        .t0_ns = t0 };
    rc = htkv_worker_submit(db, shard, r);
    if (rc != 0) {
        htkv_batch_destroy(copy);
        htkv_mem_free(r);
    }
    db_exit(db, slot);
    return rc;
}

/* ---- flush ----------------------------------------------------------------------------------- */

int
htkv_flush(htkv_db *db)
{
    if (db == NULL) {
        return htkv_einval(__func__);
    }
    if (db->read_only) {
        return 0;
    }
    unsigned slot;
    int rc = db_enter(db, &slot);
    if (rc != 0) {
        return rc;
    }
    for (uint32_t i = 0; i < db->shard_count; i++) {
        int src = htkv_shard_sync(db_shard(db, i));
        if (src != 0 && rc == 0) {
            rc = src;
        }
    }
    db_exit(db, slot);
    return rc;
}
