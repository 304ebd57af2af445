/*
 * test_replica_model.c - model-based, adversarial tests of the replication interface, written
 * from the public headers (include/htkv/htkv.h, include/htkv/replication.h) only.
 *
 *   replicas_fed_one_log_never_diverge: four replicas (1, 3 and 8 shards, inline and two
 *     workers, every sync mode) are fed one random log through htkv_submit(), in chunks split
 *     at random entry boundaries, with old and overlapping ranges resubmitted and entries cut in
 *     two; between chunks each replica compacts, writes snapshots, reopens, closes as a crash
 *     would, installs another replica's snapshot taken at the same log position, or lags one
 *     chunk and then catches up by replay or by installing a snapshot. After every step every
 *     replica gives the outcomes and the latest version of a model of the stale rule, the
 *     model's keys, values and versions, and byte-identical snapshots.
 *   follower_fed_by_change_feed_equals_leader: a leader of local writes, compactions, snapshot
 *     writes, rollbacks to older snapshots, reopens and crash-closes; a follower that catches up
 *     only from htkv_changes_since() (installing a fresh leader snapshot on HTKV_ECOMPACTED)
 *     equals the leader (keys, values, versions, latest version) after every leader operation.
 *     A rollback of the leader below the follower must be reported as HTKV_ECOMPACTED.
 *   concurrent_snapshot_writes: three threads write snapshots to one shared path and to paths
 *     of their own while a writer commits batches; every file a successful call leaves is
 *     accepted, and restores into a fresh store with every batch whole or absent.
 *
 * Every randomised test prints its seed on start and with every failure; HTKV_SEED=N replays
 * it. HTKV_MODEL_SCALE=F scales the number of steps (sanitizer builds run a quarter).
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#include <htkv/replication.h>

#include "tests/support/model.h"

/* ---- common: files, store dumps (seed-carrying checks and scale: tests/support/model.h) ----- */

static unsigned char *
slurp(const char *path, size_t *len)
{
    long long n = tu_file_size(path);
    MCHECK(n >= 0, "cannot stat %s", path);
    unsigned char *p = malloc((size_t)(n > 0 ? n : 1));
    MCHECK(p != NULL, "out of memory");
    MCHECK(n == 0 || tu_read_at(path, 0, p, (size_t)n) == 0, "cannot read %s", path);
    *len = (size_t)n;
    return p;
}

/* Every item of a store, in iteration order. */
struct item {
    unsigned char *key;
    size_t klen;
    unsigned char *val;
    size_t vlen;
    uint64_t version;
};

struct dump {
    struct item *it;
    size_t n, cap;
};

static void
dump_store(htkv_db *db, struct dump *d)
{
    d->it = NULL;
    d->n = d->cap = 0;
    htkv_iter *it = NULL;
    RC_OK(htkv_get_prefix(db, NULL, 0, &it));
    const void *k, *v;
    size_t kl, vl;
    int rc;
    while ((rc = htkv_iter_next(it, &k, &kl, &v, &vl)) == 1) {
        if (d->n == d->cap) {
            d->cap = d->cap ? d->cap * 2 : 64;
            d->it = realloc(d->it, d->cap * sizeof(*d->it));
            MCHECK(d->it != NULL, "out of memory");
        }
        struct item *x = &d->it[d->n++];
        x->key = malloc(kl);
        x->val = malloc(vl ? vl : 1);
        MCHECK(x->key != NULL && x->val != NULL, "out of memory");
        memcpy(x->key, k, kl);
        if (vl) {
            memcpy(x->val, v, vl);
        }
        x->klen = kl;
        x->vlen = vl;
        x->version = htkv_iter_version(it);
        if (d->n > 1) {
            const struct item *p = &d->it[d->n - 2];
            size_t m = p->klen < kl ? p->klen : kl;
            int c = memcmp(p->key, k, m);
            MCHECK(c < 0 || (c == 0 && p->klen < kl), "iteration out of key order at item %zu",
                   d->n - 1);
        }
    }
    htkv_iter_destroy(it);
    MCHECK(rc == 0, "htkv_iter_next: %d (%s)", rc, htkv_strerror(rc));
}

static void
dump_free(struct dump *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->it[i].key);
        free(d->it[i].val);
    }
    free(d->it);
    d->it = NULL;
    d->n = d->cap = 0;
}

static void
dump_equal(const struct dump *a, const struct dump *b, const char *what)
{
    MCHECK(a->n == b->n, "%s: %zu keys against %zu", what, a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const struct item *x = &a->it[i], *y = &b->it[i];
        MCHECK(x->klen == y->klen && memcmp(x->key, y->key, x->klen) == 0,
               "%s: item %zu: keys differ ('%.*s' against '%.*s')", what, i,
               (int)(x->klen < 40 ? x->klen : 40), (const char *)x->key,
               (int)(y->klen < 40 ? y->klen : 40), (const char *)y->key);
        MCHECK(x->vlen == y->vlen && (x->vlen == 0 || memcmp(x->val, y->val, x->vlen) == 0),
               "%s: key '%.*s': values differ (%zu against %zu bytes)", what,
               (int)(x->klen < 40 ? x->klen : 40), (const char *)x->key, x->vlen, y->vlen);
        MCHECK(x->version == y->version, "%s: key '%.*s': version %llu against %llu", what,
               (int)(x->klen < 40 ? x->klen : 40), (const char *)x->key,
               (unsigned long long)x->version, (unsigned long long)y->version);
    }
}

/* ---- 1. replicas fed one log ---------------------------------------------------------------- */

#define RM_NKEYS 40
#define RM_KEYMAX 128
#define RM_REPLICAS 4

static char rm_key[RM_NKEYS][RM_KEYMAX];
static size_t rm_klen[RM_NKEYS];

/* Keys "r/NN/" and 0..78 filler bytes: shared prefixes, varied lengths. */
static void
rm_keys_make(void)
{
    for (unsigned i = 0; i < RM_NKEYS; i++) {
        int n = snprintf(rm_key[i], RM_KEYMAX, "r/%02u/", i);
        size_t extra = (i % 7) * 13;
        memset(rm_key[i] + n, 'a' + (int)(i % 26), extra);
        rm_klen[i] = (size_t)n + extra;
    }
}

static int
rm_key_id(const void *key, size_t klen)
{
    for (unsigned i = 0; i < RM_NKEYS; i++) {
        if (rm_klen[i] == klen && memcmp(rm_key[i], key, klen) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* The log: commands with their key ids and values (in one arena). */
struct rlog {
    htkv_command *cmd;
    unsigned *kid;
    size_t *voff;
    size_t n, cap;
    unsigned char *arena;
    size_t arena_len, arena_cap;
    size_t *estart; /* entry e is [estart[e], estart[e + 1]); estart[entries] = n */
    size_t entries;
};

static void
rlog_push(struct rlog *l, int type, unsigned kid, size_t vlen, uint64_t version, uint64_t tag)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1024;
        l->cmd = realloc(l->cmd, l->cap * sizeof(*l->cmd));
        l->kid = realloc(l->kid, l->cap * sizeof(*l->kid));
        l->voff = realloc(l->voff, l->cap * sizeof(*l->voff));
        MCHECK(l->cmd && l->kid && l->voff, "out of memory");
    }
    if (type == HTKV_CMD_DELETE) {
        vlen = 0;
    }
    if (l->arena_len + vlen + 1 > l->arena_cap) {
        l->arena_cap = (l->arena_cap + vlen + 1) * 2;
        l->arena = realloc(l->arena, l->arena_cap);
        MCHECK(l->arena != NULL, "out of memory");
    }
    tu_fill(l->arena + l->arena_len, vlen, tag);
    l->voff[l->n] = l->arena_len;
    l->arena_len += vlen;
    l->cmd[l->n] = (htkv_command){ .type = type,
                                   .key = rm_key[kid],
                                   .key_len = rm_klen[kid],
                                   .val = NULL,
                                   .val_len = vlen,
                                   .version = version };
    l->kid[l->n] = kid;
    l->n++;
}

static unsigned
rm_pick_key(uint64_t *rng)
{
    uint64_t r = tu_rand(rng);
    return (r & 1) ? (unsigned)((r >> 1) % 8) : (unsigned)((r >> 1) % RM_NKEYS); /* hot keys */
}

static size_t
rm_pick_vlen(uint64_t *rng)
{
    uint64_t r = tu_rand(rng);
    return r % 16 == 0 ? 1000 + (size_t)((r >> 4) % 2500) : (size_t)((r >> 4) % 200);
}

/* A random log: versions increasing with gaps; entries of 1-4 commands: single sets and
 * deletes (also of absent and deleted keys), [SET k, DELETE k], [DELETE k, SET k], mixes. */
static void
rlog_make(struct rlog *l, uint64_t *rng, size_t entries)
{
    memset(l, 0, sizeof(*l));
    l->estart = malloc((entries + 1) * sizeof(*l->estart));
    MCHECK(l->estart != NULL, "out of memory");
    uint64_t v = 0;
    for (size_t e = 0; e < entries; e++) {
        uint64_t r = tu_rand(rng);
        v += 1 + ((r & 7) == 0 ? (r >> 3) % 5 : 0);
        l->estart[e] = l->n;
        unsigned shape = (unsigned)((r >> 8) % 10);
        unsigned k = rm_pick_key(rng);
        if (shape < 5) {
            int type = (r >> 16) % 10 < 7 ? HTKV_CMD_SET : HTKV_CMD_DELETE;
            rlog_push(l, type, k, rm_pick_vlen(rng), v, tu_rand(rng));
        } else if (shape == 5) {
            rlog_push(l, HTKV_CMD_SET, k, rm_pick_vlen(rng), v, tu_rand(rng));
            rlog_push(l, HTKV_CMD_DELETE, k, 0, v, 0);
        } else if (shape == 6) {
            rlog_push(l, HTKV_CMD_DELETE, k, 0, v, 0);
            rlog_push(l, HTKV_CMD_SET, k, rm_pick_vlen(rng), v, tu_rand(rng));
        } else {
            unsigned cnt = 2 + (unsigned)((r >> 20) % 3);
            for (unsigned j = 0; j < cnt; j++) {
                int type = tu_rand(rng) % 3 == 0 ? HTKV_CMD_DELETE : HTKV_CMD_SET;
                rlog_push(l, type, j == 0 ? k : rm_pick_key(rng), rm_pick_vlen(rng), v,
                          tu_rand(rng));
            }
        }
    }
    l->estart[entries] = l->n;
    l->entries = entries;
    for (size_t i = 0; i < l->n; i++) {
        if (l->cmd[i].type == HTKV_CMD_SET) {
            l->cmd[i].val = l->arena + l->voff[i];
        }
    }
}

static void
rlog_free(struct rlog *l)
{
    free(l->cmd);
    free(l->kid);
    free(l->voff);
    free(l->arena);
    free(l->estart);
}

/* Index of the first entry that starts at or after command @p pos (entries if none). */
static size_t
rlog_entry_at_or_after(const struct rlog *l, size_t pos)
{
    size_t lo = 0, hi = l->entries;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (l->estart[mid] >= pos) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

/* The model of replication.h's rule: a run (commands sharing a version) is stale as a whole
 * when its version is at or below the latest version, otherwise applied in order. */
struct rmodel {
    uint64_t latest;
    bool present[RM_NKEYS];
    uint64_t version[RM_NKEYS];
    const unsigned char *val[RM_NKEYS];
    size_t vlen[RM_NKEYS];
};

static size_t
rmodel_apply(struct rmodel *m, const struct rlog *l, size_t from, size_t to, int *out)
{
    size_t applied = 0;
    size_t i = from;
    while (i < to) {
        size_t j = i;
        while (j < to && l->cmd[j].version == l->cmd[i].version) {
            j++;
        }
        bool stale = l->cmd[i].version <= m->latest;
        for (size_t k = i; k < j; k++) {
            out[k - from] = stale ? HTKV_STALE : HTKV_APPLIED;
            if (stale) {
                continue;
            }
            unsigned id = l->kid[k];
            if (l->cmd[k].type == HTKV_CMD_SET) {
                m->present[id] = true;
                m->version[id] = l->cmd[k].version;
                m->val[id] = l->cmd[k].val;
                m->vlen[id] = l->cmd[k].val_len;
            } else {
                m->present[id] = false;
                m->version[id] = 0;
            }
        }
        if (!stale) {
            m->latest = l->cmd[i].version;
            applied += j - i;
        }
        i = j;
    }
    return applied;
}

static size_t
rmodel_live(const struct rmodel *m)
{
    size_t n = 0;
    for (unsigned i = 0; i < RM_NKEYS; i++) {
        n += m->present[i];
    }
    return n;
}

struct replica {
    char name[16];
    char *dir;
    htkv_config cfg;
    htkv_db *db;
    char cmp[4200], own[4200], xfer[4200];
    bool lagging; /* skipped the last chunk */
    size_t lag_from, lag_to;
    int *lag_out; /* the outcomes the others gave for the skipped chunk */
    size_t lag_applied;
    unsigned long installs, crashes, reopens, compactions, replays, rebuilds;
};

/* Submit [from, to) to @p r in calls split at random version boundaries; returns the sum of
 * what the calls returned; outcomes into @p out (indexed from @p from). */
static size_t
rm_submit(struct replica *r, const struct rlog *l, size_t from, size_t to, int *out, uint64_t *rng)
{
    size_t total = 0;
    size_t i = from;
    while (i < to) {
        size_t end = i + 1 + (size_t)(tu_rand(rng) % 24);
        if (end > to) {
            end = to;
        }
        while (end < to && l->cmd[end].version == l->cmd[end - 1].version) {
            end++;
        }
        for (size_t k = i; k < end; k++) {
            out[k - from] = -1;
        }
        int rc = htkv_submit(r->db, &l->cmd[i], end - i, out + (i - from));
        MCHECK(rc >= 0, "replica %s: htkv_submit [%zu, %zu): %d (%s) %s", r->name, i, end, rc,
               htkv_strerror(rc), htkv_last_error());
        total += (size_t)rc;
        i = end;
    }
    return total;
}

static void
rm_expect_outcomes(const struct replica *r, const int *got, const int *want, size_t from, size_t to,
                   size_t got_applied, size_t want_applied)
{
    for (size_t i = from; i < to; i++) {
        MCHECK(got[i - from] == want[i - from],
               "replica %s: command %zu: outcome %d, the model says %d (%d = stale)", r->name, i,
               got[i - from], want[i - from], HTKV_STALE);
    }
    MCHECK(got_applied == want_applied, "replica %s: htkv_submit applied %zu commands, model %zu",
           r->name, got_applied, want_applied);
}

static void
rm_reopen(struct replica *r, bool crash)
{
    uint64_t before = tu_latest(r->db);
    if (crash) {
        tu_close_as_crash(r->db);
        r->crashes++;
    } else {
        RC_OK(htkv_close(r->db));
        r->reopens++;
    }
    r->db = tu_open(&r->cfg);
    uint64_t after = tu_latest(r->db);
    MCHECK(after == before,
           "replica %s: htkv_latest_version %llu before a %s, %llu after the reopen (a replica "
           "that restarts must stand where it was, or it skips or repeats log entries)",
           r->name, (unsigned long long)before, crash ? "crash-close" : "clean close",
           (unsigned long long)after);
}

/* @p r installs the snapshot @p path (written by another replica or itself). */
static void
rm_install(struct replica *r, const char *path, uint64_t expect_version)
{
    uint64_t fv = 0, count = 0;
    RC_OK(htkv_snapshot_file_version(path, &fv, &count));
    MCHECK(fv == expect_version, "snapshot %s says version %llu, its writer stood at %llu", path,
           (unsigned long long)fv, (unsigned long long)expect_version);
    uint64_t before = tu_latest(r->db);
    RC_OK(htkv_snapshot_restore(r->db, path));
    uint64_t after = tu_latest(r->db);
    if (fv >= before) {
        MCHECK(after == fv,
               "replica %s installed a snapshot at version %llu (it stood at %llu): latest "
               "version %llu afterwards; the log would go on from another position",
               r->name, (unsigned long long)fv, (unsigned long long)before,
               (unsigned long long)after);
    }
    r->installs++;
}

static void
rm_check_reads(const struct replica *r, const struct rmodel *m)
{
    static unsigned char buf[8192];
    for (unsigned i = 0; i < RM_NKEYS; i++) {
        size_t vl = 0;
        uint64_t ver = 7;
        int rc = htkv_get_version(r->db, rm_key[i], rm_klen[i], buf, sizeof(buf), &vl, &ver);
        if (!m->present[i]) {
            MCHECK(rc == HTKV_ENOTFOUND, "replica %s: key %s: %d (%s), the model says absent",
                   r->name, rm_key[i], rc, htkv_strerror(rc));
            continue;
        }
        MCHECK(rc == 0, "replica %s: key %s: %d (%s), the model holds %zu bytes at version %llu",
               r->name, rm_key[i], rc, htkv_strerror(rc), m->vlen[i],
               (unsigned long long)m->version[i]);
        MCHECK(vl == m->vlen[i] && (vl == 0 || memcmp(buf, m->val[i], vl) == 0),
               "replica %s: key %s: %zu bytes, model %zu (or other bytes)", r->name, rm_key[i], vl,
               m->vlen[i]);
        MCHECK(ver == m->version[i], "replica %s: key %s: version %llu, model %llu", r->name,
               rm_key[i], (unsigned long long)ver, (unsigned long long)m->version[i]);
    }
    struct dump d;
    dump_store(r->db, &d);
    MCHECK(d.n == rmodel_live(m), "replica %s: %zu keys listed, the model has %zu", r->name, d.n,
           rmodel_live(m));
    for (size_t i = 0; i < d.n; i++) {
        int id = rm_key_id(d.it[i].key, d.it[i].klen);
        MCHECK(id >= 0 && m->present[id], "replica %s lists a key the model does not hold",
               r->name);
        MCHECK(d.it[i].version == m->version[id], "replica %s: key %s listed at version %llu",
               r->name, rm_key[id], (unsigned long long)d.it[i].version);
    }
    dump_free(&d);
}

/* Every replica that is not lagging: the model's latest version, keys, values and versions,
 * and the same snapshot bytes as the first of them. */
static void
rm_check_all(struct replica *rs, const struct rmodel *m)
{
    unsigned char *ref = NULL;
    size_t ref_len = 0;
    const char *ref_name = NULL;
    for (int i = 0; i < RM_REPLICAS; i++) {
        struct replica *r = &rs[i];
        if (r->lagging) {
            continue;
        }
        uint64_t v = tu_latest(r->db);
        MCHECK(v == m->latest, "replica %s: htkv_latest_version %llu, the log stands at %llu",
               r->name, (unsigned long long)v, (unsigned long long)m->latest);
        rm_check_reads(r, m);
        RC_OK(htkv_snapshot_write(r->db, r->cmp));
        uint64_t fv = 0, count = 0;
        RC_OK(htkv_snapshot_file_version(r->cmp, &fv, &count));
        MCHECK(fv == m->latest, "replica %s: its snapshot says version %llu, the log %llu", r->name,
               (unsigned long long)fv, (unsigned long long)m->latest);
        MCHECK(count == rmodel_live(m), "replica %s: its snapshot holds %llu keys, model %zu",
               r->name, (unsigned long long)count, rmodel_live(m));
        size_t len;
        unsigned char *bytes = slurp(r->cmp, &len);
        if (ref == NULL) {
            ref = bytes;
            ref_len = len;
            ref_name = r->name;
            continue;
        }
        size_t at = 0;
        while (at < len && at < ref_len && bytes[at] == ref[at]) {
            at++;
        }
        MCHECK(len == ref_len && at == len,
               "snapshots of replicas %s (%zu bytes) and %s (%zu bytes) differ from byte %zu",
               ref_name, ref_len, r->name, len, at);
        free(bytes);
    }
    free(ref);
}

static void
test_replicas_fed_one_log_never_diverge(void **state)
{
    (void)state;
    tu_model_seed = tu_seed("replicas_fed_one_log_never_diverge");
    uint64_t rng = tu_model_seed;
    tu_where("making the log");
    rm_keys_make();
    static struct rlog l;
    rlog_make(&l, &rng, tu_model_scaled(1200));
    char *snapdir = tu_tmpdir("rm-snaps");
    static const struct {
        unsigned shards, workers;
        int sync;
    } conf[RM_REPLICAS] = {
        { 1, 0, HTKV_SYNC_NEVER },
        { 3, 2, HTKV_SYNC_INTERVAL },
        { 8, 0, HTKV_SYNC_ALWAYS },
        { 8, 2, HTKV_SYNC_NEVER },
    };
    static struct replica rs[RM_REPLICAS];
    memset(rs, 0, sizeof(rs));
    for (int i = 0; i < RM_REPLICAS; i++) {
        struct replica *r = &rs[i];
        snprintf(r->name, sizeof(r->name), "R%d", i);
        r->dir = tu_tmpdir("rm-replica");
        tu_config(&r->cfg, r->dir, conf[i].sync);
        r->cfg.shard_count = conf[i].shards;
        r->cfg.worker_threads = conf[i].workers;
        r->cfg.max_segment_bytes = 64u << 10;
        r->cfg.compaction_interval_ms = 0;
        r->cfg.fsync_interval_ms = 5;
        snprintf(r->cmp, sizeof(r->cmp), "%.3000s/R%d-cmp.snap", snapdir, i);
        snprintf(r->own, sizeof(r->own), "%.3000s/R%d-own.snap", snapdir, i);
        snprintf(r->xfer, sizeof(r->xfer), "%.3000s/R%d-xfer.snap", snapdir, i);
        r->db = tu_open(&r->cfg);
        r->lag_out = malloc(l.n * sizeof(int));
        MCHECK(r->lag_out != NULL, "out of memory");
    }
    static struct rmodel m;
    memset(&m, 0, sizeof(m));
    int *want = malloc(l.n * sizeof(int));
    int *got = malloc(l.n * sizeof(int));
    MCHECK(want != NULL && got != NULL, "out of memory");
    size_t pos = 0, step = 0, stale_total = 0, applied_total = 0;
    while (pos < l.n) {
        step++;
        /* Lagging replicas catch up first: replay what they missed, or install a snapshot of
         * a replica that did not miss it (a forward install: not a rollback). */
        for (int i = 0; i < RM_REPLICAS; i++) {
            struct replica *r = &rs[i];
            if (!r->lagging) {
                continue;
            }
            tu_where("step %zu: replica %s catches up [%zu, %zu)", step, r->name, r->lag_from,
                     r->lag_to);
            int j = (i + 1 + (int)(tu_rand(&rng) % (RM_REPLICAS - 1))) % RM_REPLICAS;
            if (tu_rand(&rng) % 2 == 0 || rs[j].lagging) {
                size_t n = rm_submit(r, &l, r->lag_from, r->lag_to, got, &rng);
                rm_expect_outcomes(r, got, r->lag_out, r->lag_from, r->lag_to, n, r->lag_applied);
                r->replays++;
            } else {
                RC_OK(htkv_snapshot_write(rs[j].db, rs[j].xfer));
                rm_install(r, rs[j].xfer, m.latest);
            }
            r->lagging = false;
        }
        /* This step's range: new entries (sometimes ending inside an entry, whose rest then
         * comes back stale), an old range, or old entries followed by new ones. */
        uint64_t rr = tu_rand(&rng);
        size_t e_next = rlog_entry_at_or_after(&l, pos);
        size_t e_end = e_next + 1 + (size_t)((rr >> 8) % 24);
        if (e_end > l.entries) {
            e_end = l.entries;
        }
        size_t new_end = l.estart[e_end];
        size_t last_sz = l.estart[e_end] - l.estart[e_end - 1];
        if ((rr >> 16) % 8 == 0 && last_sz >= 2) {
            size_t cut = new_end - 1 - (size_t)((rr >> 24) % (last_sz - 1));
            if (cut > pos) {
                new_end = cut; /* cut inside the last entry */
            }
        }
        size_t a = pos, b = new_end;
        unsigned kind = (unsigned)(rr % 10);
        if (pos > 0 && kind >= 6 && kind < 8) {
            size_t span = pos < 60 ? pos : 60;
            a = pos - 1 - (size_t)((rr >> 32) % span);
            b = a + 1 + (size_t)((rr >> 40) % (pos - a));
        } else if (pos > 0 && kind >= 8) {
            size_t span = pos < 60 ? pos : 60;
            a = pos - 1 - (size_t)((rr >> 32) % span);
        }
        tu_where("step %zu: submit commands [%zu, %zu) of %zu (versions %llu..%llu), log at %zu",
                 step, a, b, l.n, (unsigned long long)l.cmd[a].version,
                 (unsigned long long)l.cmd[b - 1].version, pos);
        size_t applied = rmodel_apply(&m, &l, a, b, want);
        applied_total += applied;
        stale_total += (b - a) - applied;
        bool someone_lags = false;
        for (int i = 0; i < RM_REPLICAS; i++) {
            struct replica *r = &rs[i];
            if (!someone_lags && tu_rand(&rng) % 10 == 0) {
                someone_lags = r->lagging = true; /* skips this chunk */
                r->lag_from = a;
                r->lag_to = b;
                r->lag_applied = applied;
                memcpy(r->lag_out, want, (b - a) * sizeof(int));
                continue;
            }
            size_t n = rm_submit(r, &l, a, b, got, &rng);
            rm_expect_outcomes(r, got, want, a, b, n, applied);
        }
        if (b > pos) {
            pos = b;
        }
        /* Local things, each replica on its own. */
        for (int i = 0; i < RM_REPLICAS; i++) {
            struct replica *r = &rs[i];
            unsigned what = (unsigned)(tu_rand(&rng) % 100);
            tu_where("step %zu: replica %s local action %u (log at %zu, version %llu)", step,
                     r->name, what, pos, (unsigned long long)m.latest);
            uint64_t before = tu_latest(r->db);
            if (what < 10) {
                RC_OK(htkv_compact_now(r->db));
                r->compactions++;
            } else if (what < 20) {
                RC_OK(htkv_snapshot_write(r->db, r->own));
                uint64_t fv = 0;
                RC_OK(htkv_snapshot_file_version(r->own, &fv, NULL));
                MCHECK(fv == before, "replica %s: own snapshot at version %llu, latest %llu",
                       r->name, (unsigned long long)fv, (unsigned long long)before);
            } else if (what < 27) {
                rm_reopen(r, false);
            } else if (what < 31) {
                rm_reopen(r, true);
            } else if (what < 41 && !r->lagging) {
                /* Install another replica's snapshot, taken now at the same log position. */
                int j = (i + 1 + (int)(tu_rand(&rng) % (RM_REPLICAS - 1))) % RM_REPLICAS;
                if (!rs[j].lagging) {
                    RC_OK(htkv_snapshot_write(rs[j].db, rs[j].xfer));
                    rm_install(r, rs[j].xfer, before);
                }
            } else if (what < 45) {
                /* Install its own snapshot of this very moment: a no-op. */
                RC_OK(htkv_snapshot_write(r->db, r->own));
                rm_install(r, r->own, before);
            } else if (what < 48 && !r->lagging) {
                /* A new replica in its place: an empty store that installs another replica's
                 * snapshot (a forward install from version 0). */
                int j = (i + 1 + (int)(tu_rand(&rng) % (RM_REPLICAS - 1))) % RM_REPLICAS;
                if (!rs[j].lagging) {
                    RC_OK(htkv_close(r->db));
                    tu_rmrf(r->dir);
                    r->db = tu_open(&r->cfg);
                    MCHECK(tu_latest(r->db) == 0, "a new store at version %llu",
                           (unsigned long long)tu_latest(r->db));
                    RC_OK(htkv_snapshot_write(rs[j].db, rs[j].xfer));
                    rm_install(r, rs[j].xfer, before);
                    r->rebuilds++;
                }
            }
            uint64_t after = tu_latest(r->db);
            MCHECK(after == before,
                   "replica %s: local action %u moved htkv_latest_version from %llu to %llu",
                   r->name, what, (unsigned long long)before, (unsigned long long)after);
        }
        tu_where("step %zu: comparing replicas (log at %zu, version %llu)", step, pos,
                 (unsigned long long)m.latest);
        rm_check_all(rs, &m);
    }
    /* The last lagging replica catches up by replay. */
    for (int i = 0; i < RM_REPLICAS; i++) {
        struct replica *r = &rs[i];
        if (r->lagging) {
            tu_where("end: replica %s replays [%zu, %zu)", r->name, r->lag_from, r->lag_to);
            size_t n = rm_submit(r, &l, r->lag_from, r->lag_to, got, &rng);
            rm_expect_outcomes(r, got, r->lag_out, r->lag_from, r->lag_to, n, r->lag_applied);
            r->lagging = false;
        }
    }
    tu_where("end: final comparison");
    rm_check_all(rs, &m);
    fprintf(stderr,
            "[replicas_fed_one_log_never_diverge] %zu steps, %zu commands (%zu applied, %zu "
            "stale submissions), latest %llu\n",
            step, l.n, applied_total, stale_total, (unsigned long long)m.latest);
    for (int i = 0; i < RM_REPLICAS; i++) {
        struct replica *r = &rs[i];
        fprintf(stderr,
                "  %s: %u shards, %u workers, sync %d: %lu installs, %lu compactions, %lu "
                "reopens, %lu crash-closes, %lu replays, %lu rebuilds\n",
                r->name, r->cfg.shard_count, r->cfg.worker_threads, r->cfg.sync_mode, r->installs,
                r->compactions, r->reopens, r->crashes, r->replays, r->rebuilds);
        RC_OK(htkv_close(r->db));
        tu_rmrf(r->dir);
        free(r->dir);
        free(r->lag_out);
    }
    tu_rmrf(snapdir);
    free(snapdir);
    free(want);
    free(got);
    rlog_free(&l);
}

/* ---- 2. a follower fed by the leader's change feed ------------------------------------------ */

#define FK 40
#define FVMAX 3200

static char fk_key[FK][96];
static size_t fk_klen[FK];

static void
fk_keys_make(void)
{
    for (unsigned i = 0; i < FK; i++) {
        int n = snprintf(fk_key[i], sizeof(fk_key[i]), "f/%02u", i);
        size_t extra = (i % 5) * 17;
        memset(fk_key[i] + n, 'A' + (int)(i % 26), extra);
        fk_klen[i] = (size_t)n + extra;
    }
}

struct lmodel {
    bool present[FK];
    uint64_t version[FK];
    size_t vlen[FK];
    unsigned char val[FK][FVMAX];
};

struct lsnap {
    char path[4200];
    uint64_t version;
    struct lmodel *m;
};

struct feedtest {
    htkv_config lcfg, fcfg;
    htkv_db *leader, *follower;
    char *ldir, *fdir, *snapdir;
    char xfer[4200];
    struct lmodel *m;
    uint64_t max_ack; /* highest version the leader ever acknowledged */
    unsigned long fed_cmds, installs, feeds, compacted_after_compaction;
};

static void
ft_check_leader_model(struct feedtest *t)
{
    static unsigned char buf[FVMAX + 16];
    size_t live = 0;
    for (unsigned i = 0; i < FK; i++) {
        size_t vl = 0;
        uint64_t ver = 0;
        int rc = htkv_get_version(t->leader, fk_key[i], fk_klen[i], buf, sizeof(buf), &vl, &ver);
        if (!t->m->present[i]) {
            MCHECK(rc == HTKV_ENOTFOUND, "leader: key %s: %d (%s), the model says absent",
                   fk_key[i], rc, htkv_strerror(rc));
            continue;
        }
        live++;
        MCHECK(rc == 0, "leader: key %s: %d (%s), model has a value", fk_key[i], rc,
               htkv_strerror(rc));
        MCHECK(vl == t->m->vlen[i] && (vl == 0 || memcmp(buf, t->m->val[i], vl) == 0),
               "leader: key %s: %zu bytes, the model %zu (or other bytes)", fk_key[i], vl,
               t->m->vlen[i]);
        MCHECK(ver == t->m->version[i], "leader: key %s: version %llu, the model %llu", fk_key[i],
               (unsigned long long)ver, (unsigned long long)t->m->version[i]);
    }
    struct htkv_stats st = tu_stats(t->leader);
    MCHECK(st.live_keys == live, "leader: %llu live keys, the model %zu",
           (unsigned long long)st.live_keys, live);
}

/* The follower catches up from the leader's feed, or from a fresh leader snapshot when the
 * feed says HTKV_ECOMPACTED. Returns whether the feed said HTKV_ECOMPACTED. */
static bool
ft_catch_up(struct feedtest *t)
{
    uint64_t since = tu_latest(t->follower);
    htkv_changes *ch = (htkv_changes *)&ch; /* must be set to NULL on failure */
    int rc = htkv_changes_since(t->leader, since, &ch);
    t->feeds++;
    if (rc == HTKV_ECOMPACTED) {
        MCHECK(ch == NULL, "htkv_changes_since failed but left an iterator");
        RC_OK(htkv_snapshot_write(t->leader, t->xfer));
        uint64_t fv = 0;
        RC_OK(htkv_snapshot_file_version(t->xfer, &fv, NULL));
        uint64_t lv = tu_latest(t->leader);
        MCHECK(fv == lv, "leader snapshot at version %llu, leader latest %llu",
               (unsigned long long)fv, (unsigned long long)lv);
        RC_OK(htkv_snapshot_restore(t->follower, t->xfer));
        uint64_t now = tu_latest(t->follower);
        MCHECK(now == fv, "follower installed a snapshot at %llu (stood at %llu): latest %llu",
               (unsigned long long)fv, (unsigned long long)since, (unsigned long long)now);
        t->installs++;
        /* The feed picks up from the installed version. */
        rc = htkv_changes_since(t->leader, now, &ch);
        MCHECK(rc == 0,
               "htkv_changes_since(leader, %llu) right after installing its snapshot: "
               "%d (%s)",
               (unsigned long long)now, rc, htkv_strerror(rc));
        MCHECK(htkv_changes_count(ch) == 0, "%llu changes after the leader's own snapshot",
               (unsigned long long)htkv_changes_count(ch));
        htkv_changes_destroy(ch);
        return true;
    }
    MCHECK(rc == 0, "htkv_changes_since(leader, %llu): %d (%s) %s", (unsigned long long)since, rc,
           htkv_strerror(rc), htkv_last_error());
    uint64_t count = htkv_changes_count(ch);
    static htkv_command run[4096];
    static int out[4096];
    size_t n = 0, seen = 0;
    uint64_t prev = since;
    htkv_command c;
    for (;;) {
        rc = htkv_changes_next(ch, &c);
        MCHECK(rc == 0 || rc == 1, "htkv_changes_next: %d (%s)", rc, htkv_strerror(rc));
        if (n > 0 && (rc == 0 || c.version != run[0].version)) {
            int s = htkv_submit(t->follower, run, n, out);
            MCHECK(s == (int)n, "follower: htkv_submit of %zu commands at version %llu: %d (%s)", n,
                   (unsigned long long)run[0].version, s, htkv_strerror(s));
            n = 0;
        }
        if (rc == 0) {
            break;
        }
        seen++;
        MCHECK(c.version > since && c.version >= prev,
               "feed since %llu returned version %llu after %llu", (unsigned long long)since,
               (unsigned long long)c.version, (unsigned long long)prev);
        MCHECK(c.type == HTKV_CMD_SET || c.type == HTKV_CMD_DELETE, "feed: command type %d",
               c.type);
        MCHECK(n < 4096, "a run of more than 4096 commands");
        prev = c.version;
        run[n++] = c;
    }
    MCHECK(seen == count, "htkv_changes_count %llu, htkv_changes_next gave %zu",
           (unsigned long long)count, seen);
    t->fed_cmds += seen;
    htkv_changes_destroy(ch);
    return false;
}

static void
ft_compare(struct feedtest *t)
{
    uint64_t lv = tu_latest(t->leader), fv = tu_latest(t->follower);
    MCHECK(lv == fv, "leader latest %llu, follower latest %llu after catching up",
           (unsigned long long)lv, (unsigned long long)fv);
    struct dump a, b;
    dump_store(t->leader, &a);
    dump_store(t->follower, &b);
    dump_equal(&a, &b, "leader against follower");
    dump_free(&a);
    dump_free(&b);
}

static void
ft_open(struct feedtest *t, uint64_t *rng, const char *tag)
{
    t->ldir = tu_tmpdir(tag);
    t->fdir = tu_tmpdir(tag);
    t->snapdir = tu_tmpdir(tag);
    tu_config(&t->lcfg, t->ldir, HTKV_SYNC_NEVER);
    t->lcfg.shard_count = 1 + (unsigned)(tu_rand(rng) % 5);
    t->lcfg.max_segment_bytes = 64u << 10;
    t->lcfg.compaction_interval_ms = 0;
    tu_config(&t->fcfg, t->fdir, HTKV_SYNC_NEVER);
    t->fcfg.shard_count = 1 + (unsigned)(tu_rand(rng) % 8);
    t->fcfg.worker_threads = (unsigned)(tu_rand(rng) % 3);
    t->fcfg.max_segment_bytes = 64u << 10;
    t->fcfg.compaction_interval_ms = 0;
    snprintf(t->xfer, sizeof(t->xfer), "%s/xfer.snap", t->snapdir);
    t->leader = tu_open(&t->lcfg);
    t->follower = tu_open(&t->fcfg);
    t->m = calloc(1, sizeof(*t->m));
    MCHECK(t->m != NULL, "out of memory");
}

static void
ft_close(struct feedtest *t)
{
    RC_OK(htkv_close(t->leader));
    RC_OK(htkv_close(t->follower));
    tu_rmrf(t->ldir);
    tu_rmrf(t->fdir);
    tu_rmrf(t->snapdir);
    free(t->ldir);
    free(t->fdir);
    free(t->snapdir);
    free(t->m);
}

static void
ft_put(struct feedtest *t, unsigned k, const void *val, size_t vlen)
{
    RC_OK(htkv_put(t->leader, fk_key[k], fk_klen[k], val, vlen));
    uint64_t v = tu_latest(t->leader);
    MCHECK(v > t->max_ack, "put %s got version %llu, not above %llu", fk_key[k],
           (unsigned long long)v, (unsigned long long)t->max_ack);
    t->max_ack = v;
    t->m->present[k] = true;
    t->m->version[k] = v;
    t->m->vlen[k] = vlen;
    memcpy(t->m->val[k], val, vlen);
}

/* The rollback the header describes: S1 at ~v10, S2 at ~v20, the follower installs S2, the
 * leader restores S1 and writes one key: the feed since S2 must say HTKV_ECOMPACTED (else the
 * follower keeps the keys written between S1 and S2, which the leader lost). */
static void
ft_rollback_scenario(uint64_t *rng)
{
    struct feedtest t;
    memset(&t, 0, sizeof(t));
    ft_open(&t, rng, "rm-rollback");
    char s1[4200], s2[4200];
    snprintf(s1, sizeof(s1), "%s/s1.snap", t.snapdir);
    snprintf(s2, sizeof(s2), "%s/s2.snap", t.snapdir);
    unsigned char val[64];
    unsigned k = 0;
    tu_where("rollback scenario: writing up to version 10");
    while (tu_latest(t.leader) < 10) {
        tu_fill(val, sizeof(val), k);
        ft_put(&t, k % 10, val, 1 + k % 60);
        k++;
    }
    RC_OK(htkv_snapshot_write(t.leader, s1));
    uint64_t v1 = tu_latest(t.leader), v2 = 0, fv = 0;
    RC_OK(htkv_snapshot_file_version(s1, &fv, NULL));
    MCHECK(fv == v1, "S1 says version %llu, the leader stood at %llu", (unsigned long long)fv,
           (unsigned long long)v1);
    struct lmodel *m1 = malloc(sizeof(*m1));
    MCHECK(m1 != NULL, "out of memory");
    memcpy(m1, t.m, sizeof(*m1));
    tu_where("rollback scenario: writing up to version 20 (S1 at %llu)", (unsigned long long)v1);
    while (tu_latest(t.leader) < 20) {
        tu_fill(val, sizeof(val), k);
        ft_put(&t, 10 + k % 10, val, 1 + k % 60); /* keys S1 does not hold */
        k++;
    }
    RC_OK(htkv_delete(t.leader, fk_key[0], fk_klen[0])); /* and a key S1 holds, deleted */
    t.m->present[0] = false;
    t.max_ack = tu_latest(t.leader);
    RC_OK(htkv_snapshot_write(t.leader, s2));
    v2 = tu_latest(t.leader);
    RC_OK(htkv_snapshot_file_version(s2, &fv, NULL));
    MCHECK(fv == v2, "S2 says version %llu, the leader stood at %llu", (unsigned long long)fv,
           (unsigned long long)v2);
    tu_where("rollback scenario: follower installs S2 (%llu), leader restores S1 (%llu)",
             (unsigned long long)v2, (unsigned long long)v1);
    RC_OK(htkv_snapshot_restore(t.follower, s2));
    MCHECK(tu_latest(t.follower) == v2, "follower at %llu after installing S2 at %llu",
           (unsigned long long)tu_latest(t.follower), (unsigned long long)v2);
    ft_compare(&t);
    RC_OK(htkv_snapshot_restore(t.leader, s1));
    memcpy(t.m, m1, sizeof(*m1));
    uint64_t r = tu_latest(t.leader);
    MCHECK(r > v2,
           "a rollback restore must take a version above everything applied: latest "
           "%llu after restoring S1 (%llu) over %llu",
           (unsigned long long)r, (unsigned long long)v1, (unsigned long long)v2);
    t.max_ack = r;
    ft_check_leader_model(&t);
    htkv_changes *ch = NULL;
    int rc = htkv_changes_since(t.leader, v2, &ch);
    MCHECK(rc == HTKV_ECOMPACTED,
           "changes_since(%llu) right after the leader rolled back to S1: %d (%s), %llu changes",
           (unsigned long long)v2, rc, htkv_strerror(rc),
           (unsigned long long)(ch ? htkv_changes_count(ch) : 0));
    htkv_changes_destroy(ch);
    ch = NULL;
    tu_fill(val, sizeof(val), 999);
    ft_put(&t, 30, val, 33);
    rc = htkv_changes_since(t.leader, v2, &ch);
    MCHECK(rc == HTKV_ECOMPACTED,
           "changes_since(%llu) after the leader rolled back to S1 and wrote a key: %d (%s), "
           "%llu changes: the follower would keep the keys S2 has and the leader lost",
           (unsigned long long)v2, rc, htkv_strerror(rc),
           (unsigned long long)(ch ? htkv_changes_count(ch) : 0));
    htkv_changes_destroy(ch);
    ch = NULL;
    rc = htkv_changes_since(t.leader, v1, &ch);
    MCHECK(rc == HTKV_ECOMPACTED, "changes_since(S1's %llu) after the rollback: %d (%s)",
           (unsigned long long)v1, rc, htkv_strerror(rc));
    htkv_changes_destroy(ch);
    ch = NULL;
    rc = htkv_changes_since(t.leader, r, &ch);
    MCHECK(rc == 0 && htkv_changes_count(ch) == 1,
           "changes_since(the restore's %llu): %d (%s), %llu changes, want the one put",
           (unsigned long long)r, rc, htkv_strerror(rc),
           (unsigned long long)(ch ? htkv_changes_count(ch) : 0));
    htkv_changes_destroy(ch);
    tu_where("rollback scenario: follower catches up");
    MCHECK(ft_catch_up(&t), "the follower was not told to install a snapshot");
    ft_compare(&t);
    for (unsigned i = 10; i < 20; i++) {
        MCHECK(htkv_contains(t.follower, fk_key[i], fk_klen[i]) == 0,
               "follower still holds %s, written after S1 and lost by the leader's rollback",
               fk_key[i]);
    }
    /* And the feed goes on from there. */
    tu_fill(val, sizeof(val), 1000);
    ft_put(&t, 31, val, 12);
    RC_OK(htkv_delete(t.leader, fk_key[1], fk_klen[1]));
    t.m->present[1] = false;
    t.max_ack = tu_latest(t.leader);
    MCHECK(!ft_catch_up(&t), "HTKV_ECOMPACTED for a follower at the leader's latest version");
    ft_compare(&t);
    ft_check_leader_model(&t);
    free(m1);
    ft_close(&t);
}

#define FT_SNAPS 6

static void
test_follower_fed_by_change_feed_equals_leader(void **state)
{
    (void)state;
    tu_model_seed = tu_seed("follower_fed_by_change_feed_equals_leader");
    uint64_t rng = tu_model_seed;
    fk_keys_make();
    ft_rollback_scenario(&rng);

    struct feedtest t;
    memset(&t, 0, sizeof(t));
    ft_open(&t, &rng, "rm-feed");
    tu_where("random leader: %u shards; follower %u shards, %u workers", t.lcfg.shard_count,
             t.fcfg.shard_count, t.fcfg.worker_threads);
    struct lsnap snaps[FT_SNAPS];
    memset(snaps, 0, sizeof(snaps));
    size_t nsnaps = 0, next_snap = 0;
    unsigned long absent_delete_versions = 0;
    unsigned long rollbacks = 0, restores = 0, compactions = 0, reopens = 0, crashes = 0;
    static unsigned char val[FVMAX];
    htkv_batch *b;
    RC_OK(htkv_batch_create(&b));
    struct lmodel *tmp = malloc(sizeof(*tmp));
    MCHECK(tmp != NULL, "out of memory");
    unsigned steps = tu_model_scaled(700);
    for (unsigned step = 0; step < steps; step++) {
        unsigned what = (unsigned)(tu_rand(&rng) % 100);
        tu_where("step %u: leader action %u (latest %llu)", step, what,
                 (unsigned long long)tu_latest(t.leader));
        bool may_compact = false, must_compact = false;
        uint64_t before = tu_latest(t.leader);
        if (what < 33) {
            unsigned k = (unsigned)(tu_rand(&rng) % FK);
            size_t vl = tu_rand(&rng) % 16 == 0 ? 1500 + tu_rand(&rng) % 1500 : tu_rand(&rng) % 300;
            tu_fill(val, vl, tu_rand(&rng));
            ft_put(&t, k, val, vl);
        } else if (what < 47) {
            unsigned k = (unsigned)(tu_rand(&rng) % FK);
            int rc = htkv_delete(t.leader, fk_key[k], fk_klen[k]);
            if (t.m->present[k]) {
                MCHECK(rc == 0, "delete of present %s: %d (%s)", fk_key[k], rc, htkv_strerror(rc));
                uint64_t v = tu_latest(t.leader);
                MCHECK(v > t.max_ack, "delete got version %llu, not above %llu",
                       (unsigned long long)v, (unsigned long long)t.max_ack);
                t.max_ack = v;
                t.m->present[k] = false;
            } else {
                MCHECK(rc == HTKV_ENOTFOUND, "delete of absent %s: %d (%s)", fk_key[k], rc,
                       htkv_strerror(rc));
                MCHECK(tu_latest(t.leader) == before, "a delete that wrote nothing moved latest");
            }
        } else if (what < 65) {
            /* A batch of 1-5 puts and deletes, same keys repeated, deletes of absent keys. */
            htkv_batch_clear(b);
            memcpy(tmp, t.m, sizeof(*tmp));
            bool touched[FK] = { false };
            unsigned ops = 1 + (unsigned)(tu_rand(&rng) % 5);
            bool writes = false;
            unsigned k0 = (unsigned)(tu_rand(&rng) % FK);
            for (unsigned o = 0; o < ops; o++) {
                unsigned k = tu_rand(&rng) % 3 == 0 ? k0 : (unsigned)(tu_rand(&rng) % FK);
                touched[k] = true;
                if (tu_rand(&rng) % 5 < 3) {
                    size_t vl = tu_rand(&rng) % 400;
                    tu_fill(val, vl, tu_rand(&rng));
                    RC_OK(htkv_batch_put(b, fk_key[k], fk_klen[k], val, vl));
                    tmp->present[k] = true;
                    tmp->vlen[k] = vl;
                    memcpy(tmp->val[k], val, vl);
                    writes = true;
                } else {
                    RC_OK(htkv_batch_delete(b, fk_key[k], fk_klen[k]));
                    writes = writes || tmp->present[k];
                    tmp->present[k] = false;
                }
            }
            RC_OK(htkv_write(t.leader, b));
            uint64_t v = htkv_batch_version(b);
            uint64_t now = tu_latest(t.leader);
            if (writes) {
                MCHECK(v > t.max_ack && now == v,
                       "batch version %llu (latest %llu), not above %llu", (unsigned long long)v,
                       (unsigned long long)now, (unsigned long long)t.max_ack);
                t.max_ack = v;
            } else {
                /* Only deletes of absent keys. htkv.h says such a delete "writes nothing";
                 * the engine may still give the batch a version (and write tombstones): then
                 * it must be a fresh version, and the feed must carry it to the follower,
                 * whose latest version is compared after the catch-up. */
                if (now != before) {
                    MCHECK(now == v && v > t.max_ack,
                           "a batch of deletes of absent keys moved latest from %llu to %llu "
                           "(batch version %llu, highest acknowledged %llu)",
                           (unsigned long long)before, (unsigned long long)now,
                           (unsigned long long)v, (unsigned long long)t.max_ack);
                    t.max_ack = v;
                    absent_delete_versions++;
                }
            }
            /* A key the batch left with a value was last put by it: the batch's version. */
            for (unsigned k = 0; k < FK; k++) {
                if (touched[k] && tmp->present[k]) {
                    tmp->version[k] = v;
                }
            }
            memcpy(t.m, tmp, sizeof(*tmp));
        } else if (what < 71) {
            RC_OK(htkv_compact_now(t.leader));
            may_compact = true;
            compactions++;
        } else if (what < 79) {
            struct lsnap *s = &snaps[next_snap];
            next_snap = (next_snap + 1) % FT_SNAPS;
            if (nsnaps < FT_SNAPS) {
                nsnaps++;
                s->m = malloc(sizeof(*s->m));
                MCHECK(s->m != NULL, "out of memory");
                snprintf(s->path, sizeof(s->path), "%s/leader-%zu.snap", t.snapdir,
                         (size_t)(s - snaps));
            }
            RC_OK(htkv_snapshot_write(t.leader, s->path));
            RC_OK(htkv_snapshot_file_version(s->path, &s->version, NULL));
            MCHECK(s->version == before, "leader snapshot at %llu, latest %llu",
                   (unsigned long long)s->version, (unsigned long long)before);
            memcpy(s->m, t.m, sizeof(*s->m));
        } else if (what < 85 && nsnaps > 0) {
            struct lsnap *s = &snaps[tu_rand(&rng) % nsnaps];
            tu_where("step %u: leader restores its snapshot at %llu (latest %llu)", step,
                     (unsigned long long)s->version, (unsigned long long)before);
            RC_OK(htkv_snapshot_restore(t.leader, s->path));
            memcpy(t.m, s->m, sizeof(*t.m));
            uint64_t now = tu_latest(t.leader);
            restores++;
            if (s->version < before) {
                rollbacks++;
                MCHECK(now > t.max_ack, "rollback to %llu: latest %llu, not above %llu",
                       (unsigned long long)s->version, (unsigned long long)now,
                       (unsigned long long)t.max_ack);
                t.max_ack = now;
                must_compact = true;
            } else {
                MCHECK(now == before,
                       "restore of a snapshot at the latest version %llu moved "
                       "latest to %llu",
                       (unsigned long long)before, (unsigned long long)now);
            }
            may_compact = true;
        } else if (what < 91) {
            RC_OK(htkv_close(t.leader));
            t.leader = tu_open(&t.lcfg);
            reopens++;
            MCHECK(tu_latest(t.leader) == before,
                   "leader latest %llu after a clean reopen, %llu "
                   "before",
                   (unsigned long long)tu_latest(t.leader), (unsigned long long)before);
        } else if (what < 94) {
            tu_close_as_crash(t.leader);
            t.leader = tu_open(&t.lcfg);
            crashes++;
            MCHECK(tu_latest(t.leader) == before,
                   "leader latest %llu after a crash-close and "
                   "reopen, %llu before",
                   (unsigned long long)tu_latest(t.leader), (unsigned long long)before);
        } else {
            /* A burst of puts: many commands for the feed, segment rotations. */
            for (int i = 0; i < 30; i++) {
                unsigned k = (unsigned)(tu_rand(&rng) % FK);
                size_t vl = 200 + tu_rand(&rng) % 1800;
                tu_fill(val, vl, tu_rand(&rng));
                ft_put(&t, k, val, vl);
            }
        }
        MCHECK(tu_latest(t.leader) >= before, "leader latest went back from %llu to %llu",
               (unsigned long long)before, (unsigned long long)tu_latest(t.leader));
        ft_check_leader_model(&t);
        tu_where("step %u: follower catches up after leader action %u (leader latest %llu)", step,
                 what, (unsigned long long)tu_latest(t.leader));
        bool compacted = ft_catch_up(&t);
        if (must_compact) {
            MCHECK(compacted, "the leader rolled back, but the feed did not say HTKV_ECOMPACTED");
        }
        if (compacted && !must_compact) {
            MCHECK(may_compact,
                   "HTKV_ECOMPACTED after leader action %u, which neither "
                   "compacted nor restored",
                   what);
            t.compacted_after_compaction++;
        }
        ft_compare(&t);
    }
    fprintf(stderr,
            "[follower_fed_by_change_feed_equals_leader] %u steps: %lu feed reads, %lu commands "
            "fed, %lu snapshot installs (%lu after a compaction), %lu restores (%lu rollbacks), "
            "%lu compactions, %lu reopens, %lu crash-closes; latest %llu\n",
            steps, t.feeds, t.fed_cmds, t.installs, t.compacted_after_compaction, restores,
            rollbacks, compactions, reopens, crashes, (unsigned long long)tu_latest(t.leader));
    if (absent_delete_versions > 0) {
        fprintf(stderr,
                "[follower_fed_by_change_feed_equals_leader] note: %lu batches made only of "
                "deletes of absent keys took a version (htkv.h: such a delete writes nothing)\n",
                absent_delete_versions);
    }
    htkv_batch_destroy(b);
    free(tmp);
    for (size_t i = 0; i < nsnaps; i++) {
        free(snaps[i].m);
    }
    ft_close(&t);
}

/* ---- 3. concurrent snapshot writes ---------------------------------------------------------- */

#define CS_GROUPS 32
#define CS_GROUP_KEYS 8
#define CS_THREADS 3

static _Atomic int cs_failures;
static _Atomic int cs_stop;

#define TCHECK(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            tu_model_report(__FILE__, __LINE__, #cond, __VA_ARGS__);                               \
            atomic_fetch_add(&cs_failures, 1);                                                     \
            return NULL;                                                                           \
        }                                                                                          \
    } while (0)

static size_t
cs_key(unsigned g, unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "grp/%02u/%u", g, i);
}

/* Value of key i of group g written by the batch with tag t: tag, index, filler. */
static size_t
cs_val(uint64_t tag, unsigned i, unsigned char *buf)
{
    size_t len = 12 + (size_t)((tag * 31 + i) % 180);
    memcpy(buf, &tag, 8);
    uint32_t ii = i;
    memcpy(buf + 8, &ii, 4);
    tu_fill(buf + 12, len - 12, tag ^ i);
    return len;
}

struct cs_writer {
    htkv_db *db;
    uint64_t rng;
    unsigned long batches, compactions;
};

static void *
cs_writer_main(void *arg)
{
    struct cs_writer *w = arg;
    htkv_batch *b = NULL;
    TCHECK(htkv_batch_create(&b) == 0, "batch create");
    unsigned char val[256];
    memset(val, 0x5a, sizeof(val));
    char key[32];
    while (!atomic_load(&cs_stop)) {
        uint64_t r = tu_rand(&w->rng);
        unsigned g = (unsigned)(r % CS_GROUPS);
        htkv_batch_clear(b);
        bool del = (r >> 8) % 4 == 0;
        uint64_t tag = tu_rand(&w->rng);
        for (unsigned i = 0; i < CS_GROUP_KEYS; i++) {
            size_t kl = cs_key(g, i, key);
            int rc = del ? htkv_batch_delete(b, key, kl)
                         : htkv_batch_put(b, key, kl, val, cs_val(tag, i, val));
            TCHECK(rc == 0, "batch op: %d", rc);
        }
        int rc = htkv_write(w->db, b);
        TCHECK(rc == 0, "htkv_write: %d (%s)", rc, htkv_strerror(rc));
        w->batches++;
        if (w->batches % 400 == 0) {
            /* Compaction under the snapshot writers' views. */
            rc = htkv_compact_now(w->db);
            TCHECK(rc == 0, "htkv_compact_now: %d (%s)", rc, htkv_strerror(rc));
            w->compactions++;
        }
        if ((r >> 16) % 8 == 0) {
            snprintf(key, sizeof(key), "solo/%u", (unsigned)((r >> 20) % 50));
            rc = htkv_put(w->db, key, strlen(key), val, (r >> 30) % 200);
            TCHECK(rc == 0, "htkv_put: %d (%s)", rc, htkv_strerror(rc));
        }
    }
    htkv_batch_destroy(b);
    return NULL;
}

struct cs_snapper {
    htkv_db *db;
    const char *shared;
    char own[4200];
    unsigned calls;
    unsigned long ok;
};

static void *
cs_snapper_main(void *arg)
{
    struct cs_snapper *s = arg;
    uint64_t last_own = 0;
    for (unsigned i = 0; i < s->calls; i++) {
        uint64_t before = 0, after = 0, v = 0, count = 0;
        TCHECK(htkv_latest_version(s->db, &before) == 0, "latest");
        int rc = htkv_snapshot_write(s->db, s->shared);
        TCHECK(rc == 0, "snapshot to the shared path, call %u: %d (%s) %s", i, rc,
               htkv_strerror(rc), htkv_last_error());
        rc = htkv_snapshot_file_version(s->shared, &v, &count);
        TCHECK(rc == 0,
               "the shared path right after a successful write (call %u) is refused: %d (%s) %s", i,
               rc, htkv_strerror(rc), htkv_last_error());
        rc = htkv_snapshot_write(s->db, s->own);
        TCHECK(rc == 0, "snapshot to %s, call %u: %d (%s) %s", s->own, i, rc, htkv_strerror(rc),
               htkv_last_error());
        rc = htkv_snapshot_file_version(s->own, &v, &count);
        TCHECK(rc == 0, "%s right after a successful write (call %u) is refused: %d (%s) %s",
               s->own, i, rc, htkv_strerror(rc), htkv_last_error());
        TCHECK(htkv_latest_version(s->db, &after) == 0, "latest");
        TCHECK(v >= before && v <= after && v >= last_own,
               "%s: version %llu, the store stood at %llu..%llu during the call, the previous "
               "file at %llu",
               s->own, (unsigned long long)v, (unsigned long long)before, (unsigned long long)after,
               (unsigned long long)last_own);
        last_own = v;
        s->ok += 2;
    }
    return NULL;
}

/* A store restored from @p path: every group whole (8 keys of one batch) or absent. */
static void
cs_check_snapshot_file(const char *path, const char *tag)
{
    uint64_t fv = 0, count = 0;
    int rc = htkv_snapshot_file_version(path, &fv, &count);
    MCHECK(rc == 0, "%s: htkv_snapshot_file_version: %d (%s) %s", path, rc, htkv_strerror(rc),
           htkv_last_error());
    char *dir = tu_tmpdir(tag);
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.shard_count = 3;
    cfg.compaction_interval_ms = 0;
    htkv_db *db = tu_open(&cfg);
    RC_OK(htkv_snapshot_restore(db, path));
    MCHECK(tu_latest(db) == fv, "restored %s: latest %llu, the file says %llu", path,
           (unsigned long long)tu_latest(db), (unsigned long long)fv);
    MCHECK(tu_stats(db).live_keys == count, "restored %s: %llu keys, the file says %llu", path,
           (unsigned long long)tu_stats(db).live_keys, (unsigned long long)count);
    unsigned char buf[256], want[256];
    char key[32];
    for (unsigned g = 0; g < CS_GROUPS; g++) {
        unsigned present = 0;
        uint64_t tag0 = 0;
        for (unsigned i = 0; i < CS_GROUP_KEYS; i++) {
            size_t kl = cs_key(g, i, key), vl = 0;
            rc = htkv_get(db, key, kl, buf, sizeof(buf), &vl);
            if (rc == HTKV_ENOTFOUND) {
                continue;
            }
            MCHECK(rc == 0, "restored %s: %s: %d (%s)", path, key, rc, htkv_strerror(rc));
            MCHECK(vl >= 12, "restored %s: %s: %zu bytes", path, key, vl);
            uint64_t vtag;
            memcpy(&vtag, buf, 8);
            size_t wl = cs_val(vtag, i, want);
            MCHECK(wl == vl && memcmp(want, buf, vl) == 0, "restored %s: %s: damaged value", path,
                   key);
            if (present++ == 0) {
                tag0 = vtag;
            }
            MCHECK(vtag == tag0, "restored %s: group %u mixes two batches", path, g);
        }
        MCHECK(present == 0 || present == CS_GROUP_KEYS,
               "restored %s: group %u has %u of its %u keys: a batch cut in two", path, g, present,
               CS_GROUP_KEYS);
    }
    RC_OK(htkv_close(db));
    tu_rmrf(dir);
    free(dir);
}

static void
test_concurrent_snapshot_writes(void **state)
{
    (void)state;
    tu_model_seed = tu_seed("concurrent_snapshot_writes");
    atomic_store(&cs_failures, 0);
    atomic_store(&cs_stop, 0);
    tu_where("concurrent snapshot writes");
    char *dir = tu_tmpdir("rm-csnap");
    char *snapdir = tu_tmpdir("rm-csnap-files");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    tu_assert_hook_reset(); /* engine assertions on other threads must abort, not long-jump */
    cfg.shard_count = 4;
    cfg.max_segment_bytes = 64u << 10;
    cfg.compaction_interval_ms = 0;
    htkv_db *db = tu_open(&cfg);
    /* Every group written once, so that snapshots have something to cut. */
    htkv_batch *b;
    RC_OK(htkv_batch_create(&b));
    unsigned char val[256];
    char key[32];
    for (unsigned g = 0; g < CS_GROUPS; g++) {
        htkv_batch_clear(b);
        for (unsigned i = 0; i < CS_GROUP_KEYS; i++) {
            RC_OK(htkv_batch_put(b, key, cs_key(g, i, key), val, cs_val(g + 1, i, val)));
        }
        RC_OK(htkv_write(db, b));
    }
    htkv_batch_destroy(b);
    char shared[4200];
    snprintf(shared, sizeof(shared), "%s/shared.snap", snapdir);
    struct cs_writer w = {
        .db = db, .rng = tu_model_seed ^ 0x5bd1e995u, .batches = 0, .compactions = 0
    };
    struct cs_snapper s[CS_THREADS];
    for (int i = 0; i < CS_THREADS; i++) {
        s[i] = (struct cs_snapper){
            .db = db, .shared = shared, .calls = tu_model_scaled(100), .ok = 0
        };
        snprintf(s[i].own, sizeof(s[i].own), "%s/own-%d.snap", snapdir, i);
    }
    pthread_t wt, st[CS_THREADS];
    MCHECK(pthread_create(&wt, NULL, cs_writer_main, &w) == 0, "pthread_create");
    for (int i = 0; i < CS_THREADS; i++) {
        MCHECK(pthread_create(&st[i], NULL, cs_snapper_main, &s[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < CS_THREADS; i++) {
        pthread_join(st[i], NULL);
    }
    atomic_store(&cs_stop, 1);
    pthread_join(wt, NULL);
    unsigned long ok = 0;
    for (int i = 0; i < CS_THREADS; i++) {
        ok += s[i].ok;
    }
    fprintf(stderr,
            "[concurrent_snapshot_writes] %lu successful snapshot writes while %lu batches "
            "were committed and %lu compactions ran\n",
            ok, w.batches, w.compactions);
    MCHECK(atomic_load(&cs_failures) == 0, "%d failures in the threads (printed above)",
           atomic_load(&cs_failures));
    RC_OK(htkv_close(db));
    /* The files left: the shared one and one per thread, each whole and consistent; no
     * temporary file of a call that succeeded is left behind. */
    tu_where("checking the files left");
    cs_check_snapshot_file(shared, "rm-csnap-restore");
    for (int i = 0; i < CS_THREADS; i++) {
        cs_check_snapshot_file(s[i].own, "rm-csnap-restore");
    }
    DIR *d = opendir(snapdir);
    MCHECK(d != NULL, "opendir %s", snapdir);
    struct dirent *de;
    unsigned files = 0;
    char stray[256] = "";
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }
        files++;
        if (strcmp(de->d_name, "shared.snap") != 0 && strncmp(de->d_name, "own-", 4) != 0) {
            snprintf(stray, sizeof(stray), "%s", de->d_name);
        }
    }
    closedir(d);
    MCHECK(files == 1 + CS_THREADS, "%u files left in the snapshot directory, want %d (e.g. %s)",
           files, 1 + CS_THREADS, stray);
    tu_rmrf(dir);
    tu_rmrf(snapdir);
    free(dir);
    free(snapdir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replicas_fed_one_log_never_diverge),
        cmocka_unit_test(test_follower_fed_by_change_feed_equals_leader),
        cmocka_unit_test(test_concurrent_snapshot_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
