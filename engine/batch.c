/*
 * batch.c - batches: building them (htkv_batch_* of the public API) and committing one
 * atomically across the shards it touches (store layer).
 *
 * Commit. Under the locks of every shard the batch touches, taken in ascending shard order (the
 * one lock order of the engine, so two batches never deadlock), each shard's part goes through
 * the shard's three phases (shard.h): prepare (conditions checked, room and entries reserved;
 * a failure leaves the store unchanged), append (a BATCH_BEGIN frame, the records, a
 * BATCH_COMMIT frame, all at one version), install. Recovery applies a batch only when every
 * part's frames are complete, so a crash never leaves part of one visible.
 *
 * Invariants
 *   1. All of a batch's records carry one version, taken after every part prepared and before
 *      anything is appended; nothing visible changes before every part is written out.
 *   2. From the first install on nothing can fail: installs and publishes only.
 *   3. In HTKV_SYNC_ALWAYS a batch with several parts is synced and published while every lock
 *      is held, so no reader sees one part without the others.
 *   4. A built batch: ops[0, nops) within ops_cap, their key and value bytes within
 *      data[0, data_len) <= data_cap, ncount of them puts or deletes, rec_bytes their records'
 *      sum, at most BATCH_BYTES_MAX.
 *   5. A commit locks each shard it touches once, ascending, and appends and installs only with
 *      every one of those locks held; a part's records fill exactly the room it reserved
 *      (p->bytes) in the active segment, and its nops entries are all installed or all dropped.
 *   6. Each shard installs versions in increasing order: a batch's version is above every
 *      version appended to any of its shards before.
 * May call: the shard layer (shard.h), versions, the record codec and the base layer.
 */
#include "engine/batch.h"

#include <stdlib.h>

#include "engine/hash.h"
#include "engine/rec.h"
#include "engine/store.h"

#define BATCH_FRAME_BYTES (REC_HDR_BYTES + REC_BEGIN_PAYLOAD + REC_HDR_BYTES + REC_COMMIT_PAYLOAD)

HTKV_STATIC_ASSERT(BATCH_FRAME_BYTES % REC_ALIGN == 0, "batch frame keeps alignment");

/* ---- building ------------------------------------------------------------------------------- */

int
htkv_batch_create(htkv_batch **out)
{
    if (out == NULL) {
        return htkv_einval(__func__);
    }
    *out = htkv_mem_calloc(1, sizeof(**out));
    return *out == NULL ? -ENOMEM : 0;
}

static int
batch_add(htkv_batch *b, uint8_t type, const void *key, size_t klen, const void *val, size_t vlen,
          uint64_t version)
{
    if (b == NULL || (val == NULL && vlen > 0)) {
        return htkv_einval(__func__);
    }
    int rc = check_key(key, klen);
    if (rc != 0) {
        return rc;
    }
    if (vlen > HTKV_VALUE_MAX_LIMIT) {
        return HTKV_ETOOBIG;
    }
    uint64_t rec = type == 0 ? 0 : htkv_rec_size(klen, vlen);
    if (b->rec_bytes + rec > BATCH_BYTES_MAX || b->nops >= BATCH_OPS_MAX) {
        return HTKV_ETOOBIG;
    }
    if (b->nops == b->ops_cap) {
        size_t cap = b->ops_cap ? b->ops_cap * 2 : 16;
        struct batch_op *n = htkv_mem_realloc(b->ops, cap * sizeof(*n));
        if (n == NULL) {
            return -ENOMEM;
        }
        b->ops = n;
        b->ops_cap = cap;
    }
    uint64_t need = b->data_len + klen + vlen;
    if (need > b->data_cap) {
        uint64_t cap = b->data_cap ? b->data_cap : 4096;
        while (cap < need) {
            cap *= 2;
        }
        unsigned char *n = htkv_mem_realloc(b->data, cap);
        if (n == NULL) {
            return -ENOMEM;
        }
        b->data = n;
        b->data_cap = cap;
    }
    memcpy(b->data + b->data_len, key, klen);
    if (vlen > 0) {
        memcpy(b->data + b->data_len + klen, val, vlen);
    }
    b->ops[b->nops++] = (struct batch_op){ .type = type,
                                           .klen = (uint32_t)klen,
                                           .vlen = (uint32_t)vlen,
                                           .data_off = b->data_len,
                                           .version = version };
    b->data_len = need;
    b->rec_bytes += rec;
    b->ncount += type != 0;
    HTKV_DASSERT(b->nops <= b->ops_cap && b->data_len <= b->data_cap); /* invariant 4 */
    HTKV_DASSERT(b->ncount <= b->nops && b->rec_bytes <= BATCH_BYTES_MAX);
    return 0;
}

int
htkv_batch_put(htkv_batch *b, const void *key, size_t klen, const void *val, size_t vlen)
{
    return batch_add(b, REC_SET, key, klen, val, vlen, 0);
}

int
htkv_batch_delete(htkv_batch *b, const void *key, size_t klen)
{
    return batch_add(b, REC_DEL, key, klen, NULL, 0, 0);
}

int
htkv_batch_check(htkv_batch *b, const void *key, size_t klen, uint64_t version)
{
    return batch_add(b, 0, key, klen, NULL, 0, version);
}

void
htkv_batch_clear(htkv_batch *b)
{
    if (b == NULL) {
        return;
    }
    b->nops = b->ncount = 0;
    b->data_len = b->rec_bytes = 0;
    b->version = 0;
}

size_t
htkv_batch_count(const htkv_batch *b)
{
    return b == NULL ? 0 : b->ncount;
}

uint64_t
htkv_batch_version(const htkv_batch *b)
{
    return b == NULL ? 0 : b->version;
}

void
htkv_batch_destroy(htkv_batch *b)
{
    if (b == NULL) {
        return;
    }
    htkv_mem_free(b->ops);
    htkv_mem_free(b->data);
    htkv_mem_free(b);
}

/* ---- commit --------------------------------------------------------------------------------- */

struct part {
    uint32_t shard;
    uint32_t op_first, op_count; /* its operations and checks: order[op_first..+op_count) */
    uint32_t nops;               /* puts and deletes in this shard */
    uint64_t bytes;              /* records incl. batch frame */
    struct hidx_ent **ents;
};

static inline const unsigned char *
op_key(const struct htkv_batch *b, const struct batch_op *op)
{
    return b->data + op->data_off;
}

static inline uint64_t
op_hash(const struct htkv_db *db, const struct htkv_batch *b, const struct batch_op *op)
{
    return htkv_hash(op_key(b, op), op->klen, db->hash_seed);
}

/*
 * Hash every operation's key into @p hashes and group the operations by shard: @p parts (room
 * for min(nops, shard_count)) gets each shard touched, ascending, with its range of @p order
 * ([2 * nops]: the second half is scratch), which lists the operations' indexes shard by shard,
 * each shard's in batch order. Returns the number of parts. One division per operation finds its
 * shard (two passes over every operation per part, each finding it again, and a sort of the
 * shards took a fifth of a batch of 4,096 puts in 4 shards).
 */
static uint32_t
batch_shards(struct htkv_db *db, const struct htkv_batch *b, uint64_t *hashes, uint32_t *order,
             struct part *parts)
{
    uint32_t pos[MAN_SHARDS_MAX];
    uint32_t nsh = db->shard_count, nops = (uint32_t)b->nops, *shard_of = order + nops;
    HTKV_ASSERT(nops > 0 && b->nops <= BATCH_OPS_MAX); /* the caller returns early when empty */
    HTKV_ASSERT(nsh >= 1 && nsh <= MAN_SHARDS_MAX);    /* the manifest's bound */
    memset(pos, 0, nsh * sizeof(pos[0]));
    for (uint32_t i = 0; i < nops; i++) {
        HTKV_DASSERT(b->ops[i].data_off + b->ops[i].klen + b->ops[i].vlen <= b->data_len);
        hashes[i] = op_hash(db, b, &b->ops[i]);
        shard_of[i] = db_shard_of(db, hashes[i]);
        pos[shard_of[i]]++;
    }
    uint32_t n = 0, at = 0;
    for (uint32_t sh = 0; sh < nsh; sh++) {
        uint32_t c = pos[sh];
        pos[sh] = at;
        if (c > 0) {
            parts[n++] = (struct part){ .shard = sh, .op_first = at, .op_count = c };
            at += c;
        }
    }
    HTKV_ASSERT(at == nops);
    for (uint32_t i = 0; i < nops; i++) {
        order[pos[shard_of[i]]++] = i;
    }
    return n;
}

static int
batch_prepare_part(struct htkv_db *db, const struct htkv_batch *b, const uint64_t *hashes,
                   const uint32_t *order, struct part *p)
{
    struct shard *sh = db_shard(db, p->shard);
    HTKV_ASSERT(p->nops == 0 && p->bytes == 0 && p->ents == NULL); /* a fresh part */
    int rc = htkv_shard_check_writable(sh);
    if (rc != 0) {
        return rc;
    }
    for (uint32_t j = p->op_first; j < p->op_first + p->op_count; j++) {
        uint32_t i = order[j];
        const struct batch_op *op = &b->ops[i];
        HTKV_DASSERT(db_shard_of(db, hashes[i]) == p->shard);
        rc = htkv_shard_promote(sh, hashes[i], op_key(b, op), op->klen);
        if (rc != 0) {
            return rc;
        }
        if (op->type == 0) {
            if (htkv_shard_current_version(sh, hashes[i], op_key(b, op), op->klen) != op->version) {
                return HTKV_ECONFLICT;
            }
        } else {
            p->nops++;
            p->bytes += htkv_rec_size(op->klen, op->vlen);
        }
    }
    if (p->nops == 0) {
        return 0;
    }
    p->bytes += BATCH_FRAME_BYTES;
    rc = htkv_shard_reserve(sh, p->bytes, p->nops);
    if (rc != 0) {
        return rc;
    }
    p->ents = htkv_mem_calloc(p->nops, sizeof(*p->ents));
    if (p->ents == NULL) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < p->nops; i++) {
        p->ents[i] = htkv_shard_ent_new(sh);
        if (p->ents[i] == NULL) {
            return -ENOMEM;
        }
    }
    return 0;
}

static void
batch_append_part(struct htkv_db *db, const struct htkv_batch *b, const uint64_t *hashes,
                  const uint32_t *order, struct part *p, uint32_t parts, uint64_t version)
{
    struct shard *sh = db_shard(db, p->shard);
    struct seg *s = shard_active(sh);
    /* Invariant 5: a prepared part, whose room in the active segment is reserved. */
    HTKV_ASSERT(p->nops > 0 && p->ents != NULL && parts >= 1 && version >= 1);
    uint64_t start = s->tail;
    unsigned char frame[REC_BEGIN_PAYLOAD] = { 0 };
    htkv_store32(frame, p->nops);
    htkv_store32(frame + 4, parts);
    htkv_seg_append_wt(s, REC_BATCH_BEGIN, 0, version, NULL, 0, frame, REC_BEGIN_PAYLOAD);
    uint32_t k = 0;
    for (uint32_t j = p->op_first; j < p->op_first + p->op_count; j++) {
        uint32_t i = order[j];
        const struct batch_op *op = &b->ops[i];
        if (op->type == 0) {
            continue;
        }
        const unsigned char *key = op_key(b, op);
        uint64_t off = htkv_seg_append_wt(s, op->type, REC_F_BATCH, version, key, op->klen,
                                          key + op->klen, op->vlen);
        *p->ents[k++] =
            (struct hidx_ent){ .version = version,
                               .hash = hashes[i],
                               .seg = s,
                               .off = (uint32_t)off,
                               .rec_bytes = (uint32_t)(REC_HDR_BYTES + op->klen + op->vlen),
                               .key_len = op->klen,
                               .del = op->type == REC_DEL,
                               .checked = 1 };
    }
    HTKV_ASSERT(k == p->nops);
    htkv_seg_append_wt(s, REC_BATCH_COMMIT, 0, version, NULL, 0, frame, REC_COMMIT_PAYLOAD);
    HTKV_ASSERT(s->tail - start == p->bytes); /* exactly the room batch_prepare_part() took */
    atomic_fetch_add_explicit(&s->dead_bytes, BATCH_FRAME_BYTES, memory_order_relaxed);
}

/*
 * A batch with parts in several shards, in HTKV_SYNC_ALWAYS: sync every part and publish them
 * together while all the locks are held, so that no reader or view ever sees one part without
 * the others. The syncs also cover everything appended to those shards before (their versions
 * are smaller and were appended under the same locks), so publishing up to the batch's version
 * is sound. Holding the locks across the syncs delays those shards' writers: the price of
 * cross-shard atomicity under power loss.
 */
static int
batch_sync_parts(struct htkv_db *db, struct part *parts, uint32_t nparts, uint64_t version)
{
    HTKV_ASSERT(db->cfg.sync_mode == HTKV_SYNC_ALWAYS && nparts > 1);
    for (uint32_t i = 0; i < nparts; i++) {
        if (parts[i].nops == 0) {
            continue;
        }
        struct shard *sh = db_shard(db, parts[i].shard);
        HTKV_ASSERT(db_mutex_locked(&sh->lock)); /* invariant 3: synced with every lock held */
        struct seg *s = shard_active(sh);
        uint64_t group = htkv_shard_sync_begin(sh);
        uint64_t t0 = htkv_now_ns();
        int rc = htkv_seg_sync(s);
        atomic_fetch_add_explicit(&db->env.syncs, 1, memory_order_relaxed);
        htkv_shard_sync_end(sh, group, t0);
        if (rc != 0) {
            htkv_shard_fail_sync(sh, s, rc);
            return HTKV_EFAILED;
        }
    }
    for (uint32_t i = 0; i < nparts; i++) {
        if (parts[i].nops > 0) {
            htkv_shard_publish(db_shard(db, parts[i].shard), version);
        }
    }
    return 0;
}

static void
parts_free(struct htkv_db *db, struct part *parts, uint32_t nparts)
{
    for (uint32_t i = 0; i < nparts; i++) {
        if (parts[i].ents == NULL) {
            continue;
        }
        struct shard *sh = db_shard(db, parts[i].shard);
        for (uint32_t k = 0; k < parts[i].nops; k++) {
            if (parts[i].ents[k] != NULL) {
                htkv_shard_ent_drop(sh, parts[i].ents[k]);
            }
        }
        htkv_mem_free(parts[i].ents);
        parts[i].ents = NULL;
    }
}

/* What one commit holds while it runs: its parts, one per shard touched, ascending. */
struct stage {
    uint64_t *hashes;   /* [nops]: each operation's key hash */
    uint32_t *order;    /* [2 * nops]: operations grouped by shard (batch_shards()) */
    struct part *parts; /* the shards touched, ascending */
    uint32_t nparts;
    uint32_t locked;  /* parts whose shard lock is held */
    uint32_t writing; /* parts with puts or deletes */
};

/* Hash the keys, find the shards, lock them in ascending order. 0 or -ENOMEM (nothing locked). */
static int
stage_lock(struct htkv_db *db, const struct htkv_batch *b, struct stage *st)
{
    size_t cap = b->nops < db->shard_count ? b->nops : db->shard_count;
    st->hashes = htkv_mem_alloc(b->nops * sizeof(*st->hashes));
    st->order = htkv_mem_alloc(2 * b->nops * sizeof(*st->order));
    st->parts = htkv_mem_alloc(cap * sizeof(*st->parts));
    if (st->hashes == NULL || st->order == NULL || st->parts == NULL) {
        return -ENOMEM; /* st->nparts = 0: nothing to free in the parts */
    }
    st->nparts = batch_shards(db, b, st->hashes, st->order, st->parts);
    for (st->locked = 0; st->locked < st->nparts; st->locked++) {
        HTKV_ASSERT(st->locked == 0 ||
                    st->parts[st->locked - 1].shard < st->parts[st->locked].shard);
        pthread_mutex_lock(&db_shard(db, st->parts[st->locked].shard)->lock);
    }
    return 0;
}

/* Unlock every shard locked and free what the commit held (entries not installed included). */
static void
stage_free(struct htkv_db *db, struct stage *st)
{
    if (st->parts != NULL) {
        parts_free(db, st->parts, st->nparts);
    }
    while (st->locked > 0) {
        pthread_mutex_unlock(&db_shard(db, st->parts[--st->locked].shard)->lock);
    }
    htkv_mem_free(st->parts);
    htkv_mem_free(st->order);
    htkv_mem_free(st->hashes);
}

/* The batch's version: the caller's (htkv_submit()) or the next local one. */
static int
stage_version(struct htkv_db *db, const struct htkv_batch *b, uint64_t *version)
{
    int rc;
    if (b->fixed_version != 0) {
        rc = htkv_versions_take(&db->ver, b->fixed_version);
        if (rc == 0) {
            *version = b->fixed_version;
        }
    } else {
        rc = versions_next(&db->ver, version);
    }
    HTKV_ASSERT(rc != 0 || (*version >= 1 && *version <= REC_VERSION_MAX));
    return rc;
}

/* Append every part under all the locks; in write-through segments the parts reach the files
 * before anything is installed. 0 or the error of a write-out (nothing installed). */
static int
stage_append(struct htkv_db *db, const struct htkv_batch *b, struct stage *st, uint64_t version)
{
    struct part *parts = st->parts;
    HTKV_ASSERT(st->locked == st->nparts && st->writing >= 1); /* invariant 5 */
    for (uint32_t i = 0; i < st->nparts; i++) {
        if (parts[i].nops == 0) {
            continue;
        }
        struct shard *sh = db_shard(db, parts[i].shard);
        struct seg *s = shard_active(sh);
        HTKV_ASSERT(version > sh->appended); /* invariant 6, before anything is written */
        batch_append_part(db, b, st->hashes, st->order, &parts[i], st->writing, version);
        int rc = htkv_shard_write_out(sh, s);
        if (rc != 0) {
            /* Its frame went with the tail. The parts written before stay in their segments
             * uninstalled: dead bytes, and for recovery an incomplete batch. */
            atomic_fetch_sub_explicit(&s->dead_bytes, BATCH_FRAME_BYTES, memory_order_relaxed);
            for (uint32_t j = 0; j < i; j++) {
                if (parts[j].nops > 0) {
                    struct seg *o = shard_active(db_shard(db, parts[j].shard));
                    atomic_fetch_add_explicit(&o->dead_bytes, parts[j].bytes - BATCH_FRAME_BYTES,
                                              memory_order_relaxed);
                }
            }
            return rc;
        }
    }
    return 0;
}

/* Install every part under all the locks (nothing can fail from here on); publish each unless
 * the sync mode is ALWAYS. Lists the shards written in @p shards_out. */
static void
stage_install(struct htkv_db *db, struct stage *st, uint64_t version, uint32_t *shards_out,
              uint32_t *nshards_out)
{
    HTKV_ASSERT(st->locked == st->nparts && *nshards_out == 0); /* invariant 5 */
    for (uint32_t i = 0; i < st->nparts; i++) {
        struct part *p = &st->parts[i];
        if (p->nops == 0) {
            continue;
        }
        struct shard *sh = db_shard(db, p->shard);
        HTKV_DASSERT(db_mutex_locked(&sh->lock)); /* invariant 5 */
        HTKV_ASSERT(version > sh->appended);      /* versions install in increasing order */
        htkv_shard_install_all(sh, p->ents, p->nops);
        sh->appended = version;
        sh->batches++;
        sh->metrics.unsynced_writes++;
        hist_add(&sh->metrics.bytes_written, p->bytes);
        shards_out[(*nshards_out)++] = p->shard;
        if (db->cfg.sync_mode != HTKV_SYNC_ALWAYS) {
            htkv_shard_commit(sh, version);
        }
    }
}

int
htkv_batch_stage(struct htkv_db *db, const struct htkv_batch *b, uint64_t *version_out,
                 uint32_t *shards_out, uint32_t *nshards_out)
{
    *version_out = 0;
    *nshards_out = 0;
    if (b->nops == 0) {
        return 0;
    }
    struct stage st = { 0 };
    int rc = stage_lock(db, b, &st);
    /* Each shard touched holds one of the caller's @p shards_out slots (b->nops of them). */
    HTKV_ASSERT(st.nparts <= b->nops);
    for (uint32_t i = 0; rc == 0 && i < st.nparts; i++) {
        rc = batch_prepare_part(db, b, st.hashes, st.order, &st.parts[i]);
        st.writing += st.parts[i].nops > 0;
    }
    if (rc != 0 || st.writing == 0) {
        stage_free(db, &st); /* a failure, or conditions only: they hold, nothing to write */
        return rc;
    }
    uint64_t version = 0;
    rc = stage_version(db, b, &version);
    if (rc == 0) {
        rc = stage_append(db, b, &st, version);
    }
    if (rc == 0) {
        stage_install(db, &st, version, shards_out, nshards_out);
        HTKV_ASSERT(*nshards_out == st.writing);
        if (db->cfg.sync_mode == HTKV_SYNC_ALWAYS && st.writing > 1) {
            rc = batch_sync_parts(db, st.parts, st.nparts, version);
        }
        *version_out = version;
    }
    stage_free(db, &st);
    return rc;
}

int
htkv_batch_apply(struct htkv_db *db, const struct htkv_batch *b, uint64_t *version_out)
{
    uint32_t small[16];
    uint32_t *shards = small;
    if (b->nops > 16) {
        shards = htkv_mem_alloc(b->nops * sizeof(*shards));
        if (shards == NULL) {
            return -ENOMEM;
        }
    }
    uint32_t n = 0;
    uint64_t version = 0;
    int rc = htkv_batch_stage(db, b, &version, shards, &n);
    /* ALWAYS: wait for each shard's group sync with the locks released, so that writers of other
     * shards are not held up and this batch can share syncs with them. */
    if (rc == 0 && db->cfg.sync_mode == HTKV_SYNC_ALWAYS) {
        for (uint32_t i = 0; i < n; i++) {
            struct shard *sh = db_shard(db, shards[i]);
            pthread_mutex_lock(&sh->lock);
            int wrc = htkv_shard_wait_durable(sh, version); /* releases the lock */
            if (wrc != 0 && rc == 0) {
                rc = wrc;
            }
        }
    }
    *version_out = rc == 0 ? version : 0;
    if (shards != small) {
        htkv_mem_free(shards);
    }
    return rc;
}
