/*
 * test_version_model.c - model-based, adversarial tests of versions and compaction, written from
 * the public headers (include/htkv/htkv.h, include/htkv/replication.h) only.
 *
 *   versions_never_repeat_model: random puts, deletes (also of absent keys), batches (also
 *     conditional, also made of deletes of absent keys), compactions, snapshot writes, restores
 *     of older snapshots (rollbacks), clean reopens and crash-closes (tu_close_as_crash) on a
 *     store of 1-4 shards with 64 KiB segments. After every step: each new write's version is
 *     above every version the store ever acknowledged; htkv_latest_version never goes back and
 *     equals the highest version acknowledged; htkv_changes_since(last seen) reports exactly the
 *     step's write (HTKV_ECOMPACTED only where a compaction or a rollback raised the floor, and
 *     always after a rollback); every key holds the model's value and version.
 *   compaction_terminates_on_random_shapes: for several shapes (1-8 shards, segments of 64 KiB
 *     to 4 MiB, keys of 1-200 bytes, values of 0-4 KiB), random puts, overwrites, deletes and
 *     batches, then htkv_compact_now, background compaction every 5 ms under more writes, close
 *     and reopen: every call returns within 30 s + 1 s per MiB written (a watchdog thread prints
 *     the seed and aborts otherwise) and the store equals the model throughout.
 *
 * Every randomised test prints its seed on start and with every failure; HTKV_SEED=N replays
 * it. HTKV_MODEL_SCALE=F scales the number of steps (sanitizer builds run a quarter);
 * HTKV_MODEL_TRACE=1 prints every step.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include <htkv/replication.h>

#include "tests/support/model.h"

/* ---- 1. versions never repeat ---------------------------------------------------------------- */

#define VK 48
#define VVMAX 2100
#define VSNAPS 5

static char vk_key[VK][64];
static size_t vk_klen[VK];

struct vmodel {
    bool present[VK];
    uint64_t version[VK];
    size_t vlen[VK];
    unsigned char val[VK][VVMAX];
};

struct vsnap {
    char path[4200];
    uint64_t version;
    struct vmodel *m;
};

/* One command the change feed should report for the step's write. */
struct vcmd {
    int type;
    unsigned k;
    size_t vlen;
    unsigned char val[VVMAX];
};

struct vtest {
    htkv_config cfg;
    htkv_db *db;
    struct vmodel *m, *pre;
    uint64_t max_ack;     /* highest version the store ever acknowledged */
    uint64_t last_latest; /* htkv_latest_version after the previous step */
    uint64_t fed;         /* the feed was read up to here */
    /* the step's write, if any */
    uint64_t wrote;   /* its version, 0 if the step wrote nothing */
    bool touched[VK]; /* keys it wrote */
    unsigned long writes, ecompacted_after_compaction, rollbacks, absent_delete_versions;
};

static unsigned
vk_pick(uint64_t *rng)
{
    uint64_t r = tu_rand(rng);
    return (r & 1) ? (unsigned)((r >> 1) % 8) : (unsigned)((r >> 1) % VK);
}

static size_t
vk_vlen(uint64_t *rng)
{
    uint64_t r = tu_rand(rng);
    return r % 12 == 0 ? 1000 + (size_t)((r >> 4) % 1100) : (size_t)((r >> 4) % 160);
}

/* A new write acknowledged at @p v: above everything before, and the latest version. */
static void
vt_acknowledged(struct vtest *t, uint64_t v, const char *what)
{
    MCHECK(v > t->max_ack,
           "%s acknowledged at version %llu, not above %llu, a version the store acknowledged "
           "before",
           what, (unsigned long long)v, (unsigned long long)t->max_ack);
    uint64_t now = tu_latest(t->db);
    MCHECK(now == v, "%s at version %llu, but htkv_latest_version says %llu", what,
           (unsigned long long)v, (unsigned long long)now);
    t->max_ack = v;
    t->wrote = v;
    t->writes++;
}

static void
vt_check_model(struct vtest *t)
{
    static unsigned char buf[VVMAX + 16];
    size_t live = 0;
    for (unsigned i = 0; i < VK; i++) {
        size_t vl = 0;
        uint64_t ver = 0;
        int rc = htkv_get_version(t->db, vk_key[i], vk_klen[i], buf, sizeof(buf), &vl, &ver);
        if (!t->m->present[i]) {
            MCHECK(rc == HTKV_ENOTFOUND,
                   "key %s: %d (%s), the model says absent (deleted keys "
                   "stay deleted)",
                   vk_key[i], rc, htkv_strerror(rc));
            continue;
        }
        live++;
        MCHECK(rc == 0, "key %s: %d (%s), the model has %zu bytes", vk_key[i], rc,
               htkv_strerror(rc), t->m->vlen[i]);
        MCHECK(vl == t->m->vlen[i] && (vl == 0 || memcmp(buf, t->m->val[i], vl) == 0),
               "key %s: %zu bytes, the model %zu (or other bytes)", vk_key[i], vl, t->m->vlen[i]);
        MCHECK(ver == t->m->version[i], "key %s: version %llu, the model %llu", vk_key[i],
               (unsigned long long)ver, (unsigned long long)t->m->version[i]);
    }
    htkv_iter *it = NULL;
    RC_OK(htkv_get_prefix(t->db, NULL, 0, &it));
    size_t n = 0;
    int rc;
    while ((rc = htkv_iter_next(it, NULL, NULL, NULL, NULL)) == 1) {
        n++;
    }
    htkv_iter_destroy(it);
    MCHECK(rc == 0 && n == live, "a scan lists %zu keys (rc %d), the model has %zu", n, rc, live);
}

/* The feed since the last position: exactly the step's write, if any. */
static void
vt_check_feed(struct vtest *t, bool compacted, bool rolled_back)
{
    htkv_changes *ch = NULL;
    int rc = htkv_changes_since(t->db, t->fed, &ch);
    if (rc == HTKV_ECOMPACTED) {
        MCHECK(compacted || rolled_back,
               "htkv_changes_since(%llu): HTKV_ECOMPACTED after a step that neither compacted "
               "nor rolled back",
               (unsigned long long)t->fed);
        if (!rolled_back) {
            t->ecompacted_after_compaction++;
        }
        uint64_t now = tu_latest(t->db);
        rc = htkv_changes_since(t->db, now, &ch);
        MCHECK(rc == 0, "htkv_changes_since(latest %llu) after HTKV_ECOMPACTED: %d (%s)",
               (unsigned long long)now, rc, htkv_strerror(rc));
        MCHECK(htkv_changes_count(ch) == 0, "%llu changes after the latest version",
               (unsigned long long)htkv_changes_count(ch));
        htkv_changes_destroy(ch);
        t->fed = now;
        return;
    }
    MCHECK(!rolled_back,
           "the store rolled back to an older snapshot, but htkv_changes_since(%llu) returned "
           "%d (%s) with %llu changes instead of HTKV_ECOMPACTED",
           (unsigned long long)t->fed, rc, htkv_strerror(rc),
           (unsigned long long)(ch != NULL ? htkv_changes_count(ch) : 0));
    MCHECK(rc == 0, "htkv_changes_since(%llu): %d (%s) %s", (unsigned long long)t->fed, rc,
           htkv_strerror(rc), htkv_last_error());
    /* Replay the reported commands over the model before the step: the keys they touch must
     * end as the step left them. */
    static struct vmodel replay;
    memcpy(&replay, t->pre, sizeof(replay));
    bool seen[VK] = { false };
    uint64_t n = 0;
    htkv_command c;
    while ((rc = htkv_changes_next(ch, &c)) == 1) {
        n++;
        MCHECK(t->wrote != 0,
               "the feed since %llu reports a command (version %llu) after a "
               "step that wrote nothing",
               (unsigned long long)t->fed, (unsigned long long)c.version);
        MCHECK(c.version == t->wrote,
               "the feed since %llu reports version %llu, the step wrote "
               "%llu",
               (unsigned long long)t->fed, (unsigned long long)c.version,
               (unsigned long long)t->wrote);
        int k = -1;
        for (unsigned i = 0; i < VK; i++) {
            if (vk_klen[i] == c.key_len && memcmp(vk_key[i], c.key, c.key_len) == 0) {
                k = (int)i;
            }
        }
        MCHECK(k >= 0 && t->touched[k], "the feed reports a key the step did not write");
        seen[k] = true;
        if (c.type == HTKV_CMD_SET) {
            MCHECK(c.val_len <= VVMAX, "feed value of %zu bytes", c.val_len);
            replay.present[k] = true;
            replay.vlen[k] = c.val_len;
            memcpy(replay.val[k], c.val, c.val_len);
        } else {
            MCHECK(c.type == HTKV_CMD_DELETE, "feed command type %d", c.type);
            replay.present[k] = false;
        }
    }
    MCHECK(rc == 0, "htkv_changes_next: %d (%s)", rc, htkv_strerror(rc));
    MCHECK(n == htkv_changes_count(ch), "htkv_changes_count %llu, %llu returned",
           (unsigned long long)htkv_changes_count(ch), (unsigned long long)n);
    htkv_changes_destroy(ch);
    for (unsigned k = 0; k < VK; k++) {
        if (!t->touched[k] || (!seen[k] && !t->pre->present[k] && !t->m->present[k])) {
            continue; /* untouched, or a delete of an absent key the feed need not carry */
        }
        MCHECK(
            replay.present[k] == t->m->present[k] &&
                (!replay.present[k] || (replay.vlen[k] == t->m->vlen[k] &&
                                        memcmp(replay.val[k], t->m->val[k], replay.vlen[k]) == 0)),
            "replaying the feed since %llu leaves key %s %s, the store holds it %s",
            (unsigned long long)t->fed, vk_key[k], replay.present[k] ? "set" : "absent",
            t->m->present[k] ? "set" : "absent");
    }
    t->fed = tu_latest(t->db);
}

static void
vt_reopen(struct vtest *t, bool crash)
{
    uint64_t before = tu_latest(t->db);
    if (crash) {
        tu_close_as_crash(t->db);
    } else {
        RC_OK(htkv_close(t->db));
    }
    t->db = tu_open(&t->cfg);
    uint64_t after = tu_latest(t->db);
    MCHECK(after == before,
           "htkv_latest_version %llu before a %s, %llu after the reopen (the latest version "
           "applied; never back, and no write was acknowledged above it)",
           (unsigned long long)before, crash ? "crash-close" : "clean close",
           (unsigned long long)after);
}

static void
test_versions_never_repeat_model(void **state)
{
    (void)state;
    tu_model_seed = tu_seed("versions_never_repeat_model");
    uint64_t rng = tu_model_seed;
    for (unsigned i = 0; i < VK; i++) {
        int n = snprintf(vk_key[i], sizeof(vk_key[i]), "v/%02u", i);
        size_t extra = (i % 4) * 9;
        memset(vk_key[i] + n, 'a' + (int)(i % 26), extra);
        vk_klen[i] = (size_t)n + extra;
    }
    char *dir = tu_tmpdir("vm-versions");
    char *snapdir = tu_tmpdir("vm-versions-snaps");
    static struct vtest t;
    memset(&t, 0, sizeof(t));
    static const int syncs[] = { HTKV_SYNC_NEVER, HTKV_SYNC_INTERVAL, HTKV_SYNC_ALWAYS };
    tu_config(&t.cfg, dir, syncs[tu_rand(&rng) % 3]);
    t.cfg.shard_count = 1 + (unsigned)(tu_rand(&rng) % 4);
    t.cfg.worker_threads = tu_rand(&rng) % 2 == 0 ? 0 : 2;
    t.cfg.max_segment_bytes = 64u << 10;
    t.cfg.compaction_interval_ms = 0;
    t.cfg.fsync_interval_ms = 5;
    t.db = tu_open(&t.cfg);
    t.m = calloc(1, sizeof(*t.m));
    t.pre = calloc(1, sizeof(*t.pre));
    MCHECK(t.m != NULL && t.pre != NULL, "out of memory");
    struct vsnap snaps[VSNAPS];
    memset(snaps, 0, sizeof(snaps));
    size_t nsnaps = 0, next_snap = 0;
    htkv_batch *b;
    RC_OK(htkv_batch_create(&b));
    static unsigned char val[VVMAX];
    unsigned long puts = 0, deletes = 0, batches = 0, conflicts = 0, compactions = 0;
    unsigned long snapshots = 0, restores = 0, reopens = 0, crashes = 0;
    unsigned steps = tu_model_scaled(400);
    for (unsigned step = 0; step < steps; step++) {
        unsigned what = (unsigned)(tu_rand(&rng) % 100);
        uint64_t before = tu_latest(t.db);
        tu_where("step %u: action %u (latest %llu; %u shards, %u workers, sync %d)", step, what,
                 (unsigned long long)before, t.cfg.shard_count, t.cfg.worker_threads,
                 t.cfg.sync_mode);
        memcpy(t.pre, t.m, sizeof(*t.pre));
        memset(t.touched, 0, sizeof(t.touched));
        t.wrote = 0;
        bool compacted = false, rolled_back = false;
        if (what < 30) {
            unsigned k = vk_pick(&rng);
            size_t vl = vk_vlen(&rng);
            tu_fill(val, vl, tu_rand(&rng));
            RC_OK(htkv_put(t.db, vk_key[k], vk_klen[k], val, vl));
            uint64_t v = 0;
            size_t got = 0;
            int rc = htkv_get_version(t.db, vk_key[k], vk_klen[k], NULL, 0, &got, &v);
            MCHECK(rc == 0 || rc == HTKV_ETOOSMALL, "get_version after put: %d", rc);
            vt_acknowledged(&t, v, "a put");
            t.m->present[k] = true;
            t.m->version[k] = v;
            t.m->vlen[k] = vl;
            memcpy(t.m->val[k], val, vl);
            t.touched[k] = true;
            puts++;
        } else if (what < 42) {
            unsigned k = vk_pick(&rng);
            int rc = htkv_delete(t.db, vk_key[k], vk_klen[k]);
            t.touched[k] = true;
            if (t.m->present[k]) {
                MCHECK(rc == 0, "delete of %s (present): %d (%s)", vk_key[k], rc,
                       htkv_strerror(rc));
                vt_acknowledged(&t, tu_latest(t.db), "a delete");
                t.m->present[k] = false;
                t.m->version[k] = 0;
                deletes++;
            } else {
                MCHECK(rc == HTKV_ENOTFOUND, "delete of %s (absent): %d (%s)", vk_key[k], rc,
                       htkv_strerror(rc));
                MCHECK(tu_latest(t.db) == before, "a delete of an absent key moved latest");
            }
        } else if (what < 62) {
            /* A batch: puts and deletes, keys repeated, deletes of absent keys; sometimes a
             * condition, right or wrong. */
            htkv_batch_clear(b);
            static struct vmodel after;
            memcpy(&after, t.m, sizeof(after));
            unsigned ops = 1 + (unsigned)(tu_rand(&rng) % 6);
            bool writes = false, conflict = false;
            unsigned k0 = vk_pick(&rng);
            for (unsigned o = 0; o < ops; o++) {
                unsigned k = tu_rand(&rng) % 3 == 0 ? k0 : vk_pick(&rng);
                t.touched[k] = true;
                if (tu_rand(&rng) % 5 < 3) {
                    size_t vl = vk_vlen(&rng);
                    tu_fill(val, vl, tu_rand(&rng));
                    RC_OK(htkv_batch_put(b, vk_key[k], vk_klen[k], val, vl));
                    after.present[k] = true;
                    after.vlen[k] = vl;
                    memcpy(after.val[k], val, vl);
                    writes = true;
                } else {
                    RC_OK(htkv_batch_delete(b, vk_key[k], vk_klen[k]));
                    writes = writes || after.present[k];
                    after.present[k] = false;
                    after.version[k] = 0;
                }
            }
            if (tu_rand(&rng) % 4 == 0) {
                unsigned k = vk_pick(&rng);
                bool wrong = tu_rand(&rng) % 2 == 0;
                uint64_t want = t.m->present[k] ? t.m->version[k] : 0;
                RC_OK(htkv_batch_check(b, vk_key[k], vk_klen[k], wrong ? want + 1 : want));
                conflict = wrong;
            }
            int rc = htkv_write(t.db, b);
            uint64_t v = htkv_batch_version(b);
            batches++;
            if (conflict) {
                MCHECK(rc == HTKV_ECONFLICT, "a batch with a wrong condition: %d (%s)", rc,
                       htkv_strerror(rc));
                MCHECK(tu_latest(t.db) == before, "a batch that failed its condition moved latest");
                memset(t.touched, 0, sizeof(t.touched));
                conflicts++;
            } else {
                MCHECK(rc == 0, "htkv_write: %d (%s) %s", rc, htkv_strerror(rc), htkv_last_error());
                if (writes) {
                    MCHECK(htkv_batch_version(b) == v && v != 0, "no batch version");
                    vt_acknowledged(&t, v, "a batch");
                } else if (tu_latest(t.db) != before) {
                    /* Only deletes of absent keys (htkv.h: "writes nothing for it"), but the
                     * store gave it a version: a fresh one at least. */
                    vt_acknowledged(&t, v, "a batch of deletes of absent keys");
                    t.absent_delete_versions++;
                }
                for (unsigned k = 0; k < VK; k++) {
                    if (t.touched[k] && after.present[k]) {
                        after.version[k] = v;
                    }
                }
                memcpy(t.m, &after, sizeof(after));
            }
        } else if (what < 68) {
            RC_OK(htkv_compact_now(t.db));
            compacted = true;
            compactions++;
        } else if (what < 76) {
            struct vsnap *s = &snaps[next_snap];
            next_snap = (next_snap + 1) % VSNAPS;
            if (nsnaps < VSNAPS) {
                nsnaps++;
                s->m = malloc(sizeof(*s->m));
                MCHECK(s->m != NULL, "out of memory");
                snprintf(s->path, sizeof(s->path), "%.3000s/s%zu.snap", snapdir,
                         (size_t)(s - snaps));
            }
            RC_OK(htkv_snapshot_write(t.db, s->path));
            uint64_t count = 0;
            RC_OK(htkv_snapshot_file_version(s->path, &s->version, &count));
            MCHECK(s->version == before, "a snapshot at version %llu, the store's latest %llu",
                   (unsigned long long)s->version, (unsigned long long)before);
            memcpy(s->m, t.m, sizeof(*s->m));
            snapshots++;
        } else if (what < 83 && nsnaps > 0) {
            struct vsnap *s = &snaps[tu_rand(&rng) % nsnaps];
            tu_where("step %u: restore of the snapshot at %llu (latest %llu)", step,
                     (unsigned long long)s->version, (unsigned long long)before);
            RC_OK(htkv_snapshot_restore(t.db, s->path));
            memcpy(t.m, s->m, sizeof(*t.m));
            uint64_t now = tu_latest(t.db);
            if (s->version < before) {
                /* A rollback: a version of its own, above everything applied. */
                MCHECK(now > t.max_ack,
                       "a rollback to %llu: latest %llu, not above %llu, a version the store "
                       "acknowledged before",
                       (unsigned long long)s->version, (unsigned long long)now,
                       (unsigned long long)t.max_ack);
                t.max_ack = now;
                rolled_back = true;
                t.rollbacks++;
            } else {
                MCHECK(now == before,
                       "a restore of a snapshot at the latest version %llu moved "
                       "latest to %llu",
                       (unsigned long long)before, (unsigned long long)now);
            }
            restores++;
        } else if (what < 92) {
            vt_reopen(&t, false);
            reopens++;
        } else {
            vt_reopen(&t, true);
            crashes++;
        }
        uint64_t now = tu_latest(t.db);
        MCHECK(now >= t.last_latest, "htkv_latest_version went back from %llu to %llu",
               (unsigned long long)t.last_latest, (unsigned long long)now);
        MCHECK(now == t.max_ack,
               "htkv_latest_version %llu, the highest version acknowledged is %llu",
               (unsigned long long)now, (unsigned long long)t.max_ack);
        t.last_latest = now;
        vt_check_model(&t);
        vt_check_feed(&t, compacted, rolled_back);
    }
    fprintf(stderr,
            "[versions_never_repeat_model] %u steps (%u shards, %u workers, sync %d): %lu puts, "
            "%lu deletes, %lu batches (%lu conflicts), %lu compactions, %lu snapshots, %lu "
            "restores (%lu rollbacks), %lu reopens, %lu crash-closes; latest %llu; feed "
            "HTKV_ECOMPACTED after %lu compactions\n",
            steps, t.cfg.shard_count, t.cfg.worker_threads, t.cfg.sync_mode, puts, deletes, batches,
            conflicts, compactions, snapshots, restores, t.rollbacks, reopens, crashes,
            (unsigned long long)tu_latest(t.db), t.ecompacted_after_compaction);
    if (t.absent_delete_versions > 0) {
        fprintf(stderr,
                "[versions_never_repeat_model] note: %lu batches made only of deletes of absent "
                "keys took a version (htkv.h: such a delete writes nothing)\n",
                t.absent_delete_versions);
    }
    htkv_batch_destroy(b);
    RC_OK(htkv_close(t.db));
    for (size_t i = 0; i < nsnaps; i++) {
        free(snaps[i].m);
    }
    free(t.m);
    free(t.pre);
    tu_rmrf(dir);
    tu_rmrf(snapdir);
    free(dir);
    free(snapdir);
}

/* ---- 2. compaction terminates ---------------------------------------------------------------- */

static _Atomic uint64_t wd_deadline; /* CLOCK_MONOTONIC ns; 0 = disarmed */
static _Atomic int wd_started;
static char wd_what[1024];

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *
wd_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec ts = { 0, 50 * 1000000L };
        nanosleep(&ts, NULL);
        uint64_t d = atomic_load_explicit(&wd_deadline, memory_order_acquire);
        if (d != 0 && now_ns() > d) {
            fprintf(stderr, "WATCHDOG: %s did not return in time (HTKV_SEED=%llu): hung\n", wd_what,
                    (unsigned long long)tu_model_seed);
            abort();
        }
    }
    return NULL;
}

/* Abort the process (with the seed) unless wd_disarm() comes within @p seconds. */
static void
wd_arm(unsigned seconds, const char *what)
{
    atomic_store(&wd_deadline, 0);
    snprintf(wd_what, sizeof(wd_what), "%.200s [%.512s]", what, tu_model_where);
    atomic_store_explicit(&wd_deadline, now_ns() + (uint64_t)seconds * 1000000000ull,
                          memory_order_release);
    if (atomic_exchange(&wd_started, 1) == 0) {
        pthread_t th;
        MCHECK(pthread_create(&th, NULL, wd_main, NULL) == 0, "pthread_create");
        pthread_detach(th);
    }
}

static void
wd_disarm(void)
{
    atomic_store(&wd_deadline, 0);
}

#define CK 400
#define CVMAX 4096

struct cshape {
    unsigned char key[CK][200];
    size_t klen[CK];
    bool present[CK];
    size_t vlen[CK];
    uint64_t tag[CK];
    uint64_t bytes_written;
};

static void
cs_keys(struct cshape *c, uint64_t *rng)
{
    for (unsigned i = 0; i < CK; i++) {
        for (;;) {
            uint64_t r = tu_rand(rng);
            c->klen[i] = r % 4 == 0 ? 1 + (size_t)((r >> 2) % 4) : 1 + (size_t)((r >> 2) % 200);
            tu_fill(c->key[i], c->klen[i], tu_rand(rng));
            bool dup = false;
            for (unsigned j = 0; j < i && !dup; j++) {
                dup = c->klen[j] == c->klen[i] && memcmp(c->key[j], c->key[i], c->klen[i]) == 0;
            }
            if (!dup) {
                break;
            }
        }
    }
}

static void
cs_check(htkv_db *db, const struct cshape *c, const char *when)
{
    static unsigned char buf[CVMAX], want[CVMAX];
    size_t live = 0;
    for (unsigned i = 0; i < CK; i++) {
        size_t vl = 0;
        int rc = htkv_get(db, c->key[i], c->klen[i], buf, sizeof(buf), &vl);
        if (!c->present[i]) {
            MCHECK(rc == HTKV_ENOTFOUND, "%s: key %u (%zu bytes): %d (%s), the model: absent", when,
                   i, c->klen[i], rc, htkv_strerror(rc));
            continue;
        }
        live++;
        MCHECK(rc == 0, "%s: key %u (%zu bytes): %d (%s), the model: %zu bytes", when, i,
               c->klen[i], rc, htkv_strerror(rc), c->vlen[i]);
        tu_fill(want, c->vlen[i], c->tag[i]);
        MCHECK(vl == c->vlen[i] && memcmp(buf, want, vl) == 0,
               "%s: key %u: %zu bytes, the model %zu (or other bytes)", when, i, vl, c->vlen[i]);
    }
    struct htkv_stats st = tu_stats(db);
    MCHECK(st.live_keys == live, "%s: %llu live keys, the model %zu", when,
           (unsigned long long)st.live_keys, live);
}

/* @p ops random puts (new keys, overwrites of hot keys), deletes and batches. */
static void
cs_writes(htkv_db *db, struct cshape *c, uint64_t *rng, unsigned ops, bool pauses)
{
    static unsigned char val[CVMAX];
    htkv_batch *b;
    RC_OK(htkv_batch_create(&b));
    for (unsigned o = 0; o < ops; o++) {
        if (pauses && o % 150 == 149) {
            /* Let the background compactor (every 5 ms) run between writes on few cores. */
            struct timespec ts = { 0, 6 * 1000000L };
            nanosleep(&ts, NULL);
        }
        uint64_t r = tu_rand(rng);
        unsigned what = (unsigned)(r % 100);
        unsigned k = (r >> 8) % 4 == 0 ? (unsigned)((r >> 12) % 16) : (unsigned)((r >> 12) % CK);
        if (what < 70) {
            size_t vl = (size_t)(tu_rand(rng) % (CVMAX + 1));
            uint64_t tag = tu_rand(rng);
            tu_fill(val, vl, tag);
            RC_OK(htkv_put(db, c->key[k], c->klen[k], val, vl));
            c->present[k] = true;
            c->vlen[k] = vl;
            c->tag[k] = tag;
            c->bytes_written += c->klen[k] + vl;
        } else if (what < 90) {
            int rc = htkv_delete(db, c->key[k], c->klen[k]);
            MCHECK(rc == (c->present[k] ? 0 : HTKV_ENOTFOUND), "delete: %d (%s), model %s", rc,
                   htkv_strerror(rc), c->present[k] ? "present" : "absent");
            c->present[k] = false;
            c->bytes_written += c->klen[k];
        } else {
            htkv_batch_clear(b);
            unsigned n = 2 + (unsigned)(tu_rand(rng) % 5);
            for (unsigned i = 0; i < n; i++) {
                unsigned bk = (unsigned)(tu_rand(rng) % CK);
                if (tu_rand(rng) % 3 == 0) {
                    RC_OK(htkv_batch_delete(b, c->key[bk], c->klen[bk]));
                    c->present[bk] = false;
                    c->bytes_written += c->klen[bk];
                } else {
                    size_t vl = (size_t)(tu_rand(rng) % 1024);
                    uint64_t tag = tu_rand(rng);
                    tu_fill(val, vl, tag);
                    RC_OK(htkv_batch_put(b, c->key[bk], c->klen[bk], val, vl));
                    c->present[bk] = true;
                    c->vlen[bk] = vl;
                    c->tag[bk] = tag;
                    c->bytes_written += c->klen[bk] + vl;
                }
            }
            RC_OK(htkv_write(db, b));
        }
    }
    htkv_batch_destroy(b);
}

static unsigned
cs_bound(const struct cshape *c)
{
    unsigned mib = (unsigned)(c->bytes_written >> 20);
    return (TU_SANITIZER ? 120u : 30u) + mib * (TU_SANITIZER ? 4u : 1u);
}

static void
test_compaction_terminates_on_random_shapes(void **state)
{
    (void)state;
    tu_model_seed = tu_seed("compaction_terminates_on_random_shapes");
    uint64_t rng = tu_model_seed;
    static struct cshape c;
    unsigned shapes = tu_model_scaled(4) < 2 ? 2 : tu_model_scaled(4);
    for (unsigned sh = 0; sh < shapes; sh++) {
        memset(&c, 0, sizeof(c));
        cs_keys(&c, &rng);
        char *dir = tu_tmpdir("vm-compact");
        htkv_config cfg;
        static const int syncs[] = { HTKV_SYNC_NEVER, HTKV_SYNC_INTERVAL };
        tu_config(&cfg, dir, syncs[tu_rand(&rng) % 2]);
        cfg.shard_count = 1 + (unsigned)(tu_rand(&rng) % 8);
        cfg.max_segment_bytes = (64u << 10) + tu_rand(&rng) % ((4u << 20) - (64u << 10) + 1);
        if (tu_rand(&rng) % 3 == 0) {
            cfg.max_segment_bytes = 64u << 10; /* the smallest: many segments */
        }
        cfg.compaction_interval_ms = 0;
        unsigned ops = tu_model_scaled(2500);
        tu_where("shape %u: %u shards, %llu-byte segments, sync %d, %u ops", sh, cfg.shard_count,
                 (unsigned long long)cfg.max_segment_bytes, cfg.sync_mode, ops);
        htkv_db *db = tu_open(&cfg);
        cs_writes(db, &c, &rng, ops, false);
        cs_check(db, &c, "after the writes");
        tu_where("shape %u: htkv_compact_now after %llu bytes (%u shards, %llu-byte segments)", sh,
                 (unsigned long long)c.bytes_written, cfg.shard_count,
                 (unsigned long long)cfg.max_segment_bytes);
        wd_arm(cs_bound(&c), "htkv_compact_now");
        RC_OK(htkv_compact_now(db));
        wd_disarm();
        cs_check(db, &c, "after htkv_compact_now");
        wd_arm(cs_bound(&c), "a second htkv_compact_now");
        RC_OK(htkv_compact_now(db));
        wd_disarm();
        cs_check(db, &c, "after a second htkv_compact_now");
        wd_arm(cs_bound(&c), "htkv_close");
        RC_OK(htkv_close(db));
        wd_disarm();

        /* Background passes every 5 ms while more writes come, then close. */
        cfg.compaction_interval_ms = 5;
        static const double ratios[] = { 0.0, 0.1, 0.3, 0.5 };
        cfg.compaction_min_garbage_ratio = ratios[tu_rand(&rng) % 4];
        tu_where("shape %u: background compaction (ratio %.1f) under writes", sh,
                 cfg.compaction_min_garbage_ratio);
        wd_arm(cs_bound(&c), "reopen");
        db = tu_open(&cfg);
        wd_disarm();
        cs_check(db, &c, "after reopen");
        uint64_t written_before = c.bytes_written;
        cs_writes(db, &c, &rng, ops, true);
        wd_arm(cs_bound(&c) + (unsigned)((c.bytes_written - written_before) >> 20),
               "background compaction: htkv_compact_now, close");
        struct timespec ts = { 0, 30 * 1000000L };
        nanosleep(&ts, NULL); /* a few background passes over the last writes */
        cs_check(db, &c, "under background compaction");
        RC_OK(htkv_compact_now(db));
        cs_check(db, &c, "after htkv_compact_now with background compaction");
        struct htkv_stats st = tu_stats(db);
        RC_OK(htkv_close(db));
        wd_disarm();

        tu_where("shape %u: reopen after background compaction (%llu passes)", sh,
                 (unsigned long long)st.compactions);
        cfg.compaction_interval_ms = 0;
        wd_arm(cs_bound(&c), "reopen after compaction");
        db = tu_open(&cfg);
        wd_disarm();
        cs_check(db, &c, "after the last reopen");
        RC_OK(htkv_close(db));
        fprintf(stderr,
                "[compaction_terminates_on_random_shapes] shape %u: %u shards, %llu-byte "
                "segments, %.1f MiB written, %llu compaction passes in the last session\n",
                sh, cfg.shard_count, (unsigned long long)cfg.max_segment_bytes,
                (double)c.bytes_written / (1 << 20), (unsigned long long)st.compactions);
        tu_rmrf(dir);
        free(dir);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_versions_never_repeat_model),
        cmocka_unit_test(test_compaction_terminates_on_random_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
