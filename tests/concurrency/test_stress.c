/*
 * test_stress.c - many threads writing and reading one store at once, in every execution mode:
 * inline, one worker and two workers; each sync mode; the io_uring and the plain-syscall backend.
 *
 * Phase 1 gives each thread its own keys and its own model of them: every put, get, delete,
 * batch, conditional batch and asynchronous write is checked against the model right after it
 * returns, so a write lost, misplaced or made visible late by the concurrent traffic of the other
 * threads shows up at once. Phase 2 makes the threads race on the same keys with writes whose
 * version they learn (batches and asynchronous writes) and on a counter updated by conditional
 * batches; at the end each key must hold the write with the highest version, the counter must
 * count every successful update, and the whole state must survive close and reopen (with another
 * worker count).
 */
#include "tests/concurrency/cc_util.h"

#define NTHREADS 8
#define PRIV_KEYS 40   /* per thread: small enough that keys are rewritten often */
#define SHARED_KEYS 16 /* phase 2: every thread writes all of them */

/* Model of one private key. */
struct pkey {
    bool present;
    uint64_t tag;     /* value = cc_value(tag, id, 0) */
    uint64_t version; /* version of the current value (0 when absent) */
    uint64_t floor;   /* highest version known to have touched the key */
};

/* One phase-2 write whose version the writer learned (synchronously or by its callback). */
struct logent {
    uint32_t key;
    bool del;
    uint64_t tag;
    uint64_t version;
    int rc;
    _Atomic int state; /* 0 = known at once, 1 = asynchronous and pending, 2 = completed */
    struct stress *st;
};

struct stress {
    htkv_db *db;
    struct cc_mode mode;
    unsigned ops1, ops2;
    _Atomic unsigned pending; /* phase-2 asynchronous writes not completed yet */
    _Atomic uint64_t cas_ok;  /* successful counter increments */
    _Atomic uint64_t cas_conflicts;
};

struct warg {
    struct stress *st;
    unsigned id;
    uint64_t rng;
    uint64_t counter;            /* for unique tags */
    uint64_t last_write_version; /* versions of one thread's writes only grow */
    struct pkey model[PRIV_KEYS];
    unsigned nnew; /* new keys n<id>-0..nnew-1 written */
    struct logent *log;
    size_t nlog, log_cap;
    uint64_t seen[SHARED_KEYS]; /* highest version this thread read or wrote per shared key */
    uint64_t ctr_seen;          /* highest counter value read */
};

static size_t
pkey_name(unsigned t, unsigned i, char *k)
{
    return (size_t)snprintf(k, 16, "p%02u-%03u", t, i);
}

static uint32_t
pkey_id(unsigned t, unsigned i)
{
    return 1000u + t * PRIV_KEYS + i;
}

static size_t
skey_name(unsigned i, char *k)
{
    return (size_t)snprintf(k, 16, "s%03u", i);
}

static uint64_t
new_tag(struct warg *w)
{
    return ((uint64_t)(w->id + 1) << 48) | ++w->counter;
}

static unsigned
rnd(struct warg *w, unsigned n)
{
    return (unsigned)(tu_rand(&w->rng) % n);
}

/* A write of this thread got @p v: it must be newer than the thread's previous writes. */
static bool
note_write_version(struct warg *w, uint64_t v, const char *what)
{
    CC_CHECK(v > w->last_write_version, "thread %u: %s got version %llu after version %llu", w->id,
             what, (unsigned long long)v, (unsigned long long)w->last_write_version);
    w->last_write_version = v;
    return true;
}

/* ---- phase 1: private keys against a model -------------------------------------------------- */

/*
 * Check private key @p i against the model. When @p fresh, the model's version is not known
 * yet (a put whose version the API does not return): it must exceed the key's floor and is
 * learned here.
 */
static bool
p_check(struct warg *w, unsigned i, bool fresh)
{
    htkv_db *db = w->st->db;
    struct pkey *m = &w->model[i];
    char k[16];
    size_t kl = pkey_name(w->id, i, k);
    unsigned char buf[CC_VAL_MAX], want[CC_VAL_MAX];
    size_t n = 0;
    uint64_t ver = 77;
    int rc = htkv_get_version(db, k, kl, buf, sizeof(buf), &n, &ver);
    if (!m->present) {
        CC_CHECK(rc == HTKV_ENOTFOUND && ver == 0, "%s: got rc %d (%s) version %llu, want absent",
                 k, rc, htkv_strerror(rc), (unsigned long long)ver);
        CC_CHECK(htkv_contains(db, k, kl) == 0, "%s: contains says present, want absent", k);
        return true;
    }
    CC_CHECK(rc == 0, "%s: got rc %d (%s), want tag %llx", k, rc, htkv_strerror(rc),
             (unsigned long long)m->tag);
    size_t wl = cc_value(m->tag, pkey_id(w->id, i), 0, want);
    CC_CHECK(n == wl && memcmp(buf, want, n) == 0,
             "%s: value differs from the model (len %zu, want %zu, tag %llx)", k, n, wl,
             (unsigned long long)m->tag);
    if (fresh) {
        CC_CHECK(ver > m->floor, "%s: new write has version %llu, not above %llu", k,
                 (unsigned long long)ver, (unsigned long long)m->floor);
        m->version = m->floor = ver;
        return note_write_version(w, ver, "put");
    }
    CC_CHECK(ver == m->version, "%s: version %llu, model says %llu", k, (unsigned long long)ver,
             (unsigned long long)m->version);
    CC_CHECK(htkv_contains(db, k, kl) == 1, "%s: contains says absent", k);
    return true;
}

static bool
p_put(struct warg *w)
{
    unsigned i = rnd(w, PRIV_KEYS);
    char k[16];
    size_t kl = pkey_name(w->id, i, k);
    unsigned char v[CC_VAL_MAX];
    uint64_t tag = new_tag(w);
    size_t vl = cc_value(tag, pkey_id(w->id, i), 0, v);
    int rc = htkv_put(w->st->db, k, kl, vl > 0 ? v : NULL, vl);
    CC_CHECK(rc == 0, "put %s: rc %d (%s)", k, rc, htkv_strerror(rc));
    w->model[i].present = true;
    w->model[i].tag = tag;
    return p_check(w, i, true);
}

static bool
p_delete(struct warg *w)
{
    unsigned i = rnd(w, PRIV_KEYS);
    char k[16];
    size_t kl = pkey_name(w->id, i, k);
    int rc = htkv_delete(w->st->db, k, kl);
    int want = w->model[i].present ? 0 : HTKV_ENOTFOUND;
    CC_CHECK(rc == want, "delete %s: rc %d (%s), want %d", k, rc, htkv_strerror(rc), want);
    w->model[i].present = false;
    w->model[i].version = 0;
    return p_check(w, i, false);
}

/* Final operation of a batch on each key it writes: 0 = untouched, 1 = put, 2 = delete. */
struct bplan {
    uint8_t op[PRIV_KEYS];
    uint64_t tag[PRIV_KEYS];
};

/* Fill @p b with 1..6 puts and deletes of private keys (repeats allowed: the last one wins). */
static bool
p_batch_fill(struct warg *w, htkv_batch *b, struct bplan *p, unsigned max_ops)
{
    memset(p, 0, sizeof(*p));
    unsigned n = 1 + rnd(w, max_ops);
    for (unsigned j = 0; j < n; j++) {
        unsigned i = rnd(w, PRIV_KEYS);
        char k[16];
        size_t kl = pkey_name(w->id, i, k);
        if (rnd(w, 4) == 0) {
            CC_CHECK(htkv_batch_delete(b, k, kl) == 0, "batch_delete");
            p->op[i] = 2;
        } else {
            unsigned char v[CC_VAL_MAX];
            uint64_t tag = new_tag(w);
            size_t vl = cc_value(tag, pkey_id(w->id, i), 0, v);
            CC_CHECK(htkv_batch_put(b, k, kl, vl > 0 ? v : NULL, vl) == 0, "batch_put");
            p->op[i] = 1;
            p->tag[i] = tag;
        }
    }
    return true;
}

/* A batch with version @p v committed: apply @p p to the model and check every key it wrote. */
static bool
p_batch_apply(struct warg *w, const struct bplan *p, uint64_t v)
{
    if (!note_write_version(w, v, "batch")) {
        return false;
    }
    for (unsigned i = 0; i < PRIV_KEYS; i++) {
        struct pkey *m = &w->model[i];
        if (p->op[i] == 0) {
            continue;
        }
        CC_CHECK(v > m->floor, "batch version %llu not above key %u's %llu", (unsigned long long)v,
                 i, (unsigned long long)m->floor);
        m->floor = v;
        m->present = p->op[i] == 1;
        m->tag = p->tag[i];
        m->version = m->present ? v : 0;
    }
    for (unsigned i = 0; i < PRIV_KEYS; i++) {
        if (p->op[i] != 0 && !p_check(w, i, false)) {
            return false;
        }
    }
    return true;
}

/*
 * Add 1..2 conditions to @p b; returns through @p hold whether all of them hold. A wrong
 * condition names a version off by some amount, or "absent" for a present key and vice versa.
 */
static bool
p_add_checks(struct warg *w, htkv_batch *b, bool *hold)
{
    *hold = true;
    unsigned n = 1 + rnd(w, 2);
    for (unsigned j = 0; j < n; j++) {
        unsigned i = rnd(w, PRIV_KEYS);
        char k[16];
        size_t kl = pkey_name(w->id, i, k);
        uint64_t v = w->model[i].present ? w->model[i].version : 0;
        if (rnd(w, 10) < 3) {
            v = v == 0 ? w->model[i].floor + 1 + rnd(w, 3) : (rnd(w, 2) ? 0 : v + 1 + rnd(w, 5));
            *hold = false;
        }
        CC_CHECK(htkv_batch_check(b, k, kl, v) == 0, "batch_check");
    }
    return true;
}

static bool
p_batch(struct warg *w, bool conditional, bool async)
{
    htkv_batch *b = NULL;
    CC_CHECK(htkv_batch_create(&b) == 0, "batch_create");
    struct bplan plan;
    bool hold = true, ok = false;
    /* A conditional batch sometimes carries only conditions: it writes nothing. */
    bool only_checks = conditional && rnd(w, 5) == 0;
    if (only_checks) {
        memset(&plan, 0, sizeof(plan));
    } else if (!p_batch_fill(w, b, &plan, 6)) {
        goto out;
    }
    if (conditional && !p_add_checks(w, b, &hold)) {
        goto out;
    }
    int rc;
    uint64_t v;
    if (async) {
        struct cc_done d = { 0 };
        rc = htkv_write_async(w->st->db, b, cc_done_cb, &d);
        htkv_batch_destroy(b); /* the call copied it */
        b = NULL;
        if (rc != 0) {
            cc_fail_at(__FILE__, __LINE__, "write_async: rc %d (%s)", rc, htkv_strerror(rc));
            goto out;
        }
        if (!cc_done_wait(&d, 60000)) {
            cc_fail_at(__FILE__, __LINE__, "write_async: no callback after 60 s");
            goto out;
        }
        rc = d.rc;
        v = d.version;
    } else {
        rc = htkv_write(w->st->db, b);
        v = htkv_batch_version(b);
    }
    if (!hold) {
        if (rc != HTKV_ECONFLICT || v != 0) {
            cc_fail_at(__FILE__, __LINE__, "conditional batch: rc %d (%s) version %llu, want %s",
                       rc, htkv_strerror(rc), (unsigned long long)v, "HTKV_ECONFLICT");
            goto out;
        }
        for (unsigned i = 0; i < PRIV_KEYS; i++) {
            if (plan.op[i] != 0 && !p_check(w, i, false)) {
                goto out; /* nothing of it may show */
            }
        }
        ok = true;
        goto out;
    }
    if (rc != 0) {
        cc_fail_at(__FILE__, __LINE__, "batch: rc %d (%s)", rc, htkv_strerror(rc));
        goto out;
    }
    if (only_checks) {
        if (v != 0) {
            cc_fail_at(__FILE__, __LINE__, "conditions-only batch got version %llu",
                       (unsigned long long)v);
            goto out;
        }
        ok = true;
        goto out;
    }
    ok = p_batch_apply(w, &plan, v);
out:
    htkv_batch_destroy(b);
    return ok;
}

static bool
p_async1(struct warg *w, bool del)
{
    unsigned i = rnd(w, PRIV_KEYS);
    char k[16];
    size_t kl = pkey_name(w->id, i, k);
    unsigned char v[CC_VAL_MAX];
    uint64_t tag = new_tag(w);
    size_t vl = cc_value(tag, pkey_id(w->id, i), 0, v);
    struct cc_done d = { 0 };
    int rc;
    do {
        rc = del ? htkv_delete_async(w->st->db, k, kl, cc_done_cb, &d)
                 : htkv_put_async(w->st->db, k, kl, vl > 0 ? v : NULL, vl, cc_done_cb, &d);
        if (rc == HTKV_EBUSY) {
            sched_yield();
        }
    } while (rc == HTKV_EBUSY);
    CC_CHECK(rc == 0, "%s_async %s: rc %d (%s)", del ? "delete" : "put", k, rc, htkv_strerror(rc));
    CC_CHECK(cc_done_wait(&d, 60000), "%s_async %s: no callback after 60 s", del ? "delete" : "put",
             k);
    CC_CHECK(atomic_load(&d.calls) == 1, "callback ran %d times", atomic_load(&d.calls));
    struct pkey *m = &w->model[i];
    if (del && !m->present) {
        CC_CHECK(d.rc == HTKV_ENOTFOUND && d.version == 0,
                 "delete_async %s of an absent key: rc %d version %llu", k, d.rc,
                 (unsigned long long)d.version);
        return p_check(w, i, false);
    }
    CC_CHECK(d.rc == 0 && d.version > m->floor, "%s_async %s: rc %d version %llu (floor %llu)",
             del ? "delete" : "put", k, d.rc, (unsigned long long)d.version,
             (unsigned long long)m->floor);
    if (!note_write_version(w, d.version, "async write")) {
        return false;
    }
    m->floor = d.version;
    m->present = !del;
    m->tag = tag;
    m->version = del ? 0 : d.version;
    return p_check(w, i, false);
}

/* A get into a buffer one byte too small reports the size and copies nothing. */
static bool
p_small_buffer(struct warg *w)
{
    unsigned i = rnd(w, PRIV_KEYS);
    struct pkey *m = &w->model[i];
    if (!m->present) {
        return p_check(w, i, false);
    }
    char k[16];
    size_t kl = pkey_name(w->id, i, k);
    unsigned char want[CC_VAL_MAX], buf[CC_VAL_MAX];
    size_t wl = cc_value(m->tag, pkey_id(w->id, i), 0, want);
    if (wl == 0) {
        return p_check(w, i, false);
    }
    size_t n = 0;
    int rc = htkv_get(w->st->db, k, kl, buf, wl - 1, &n);
    CC_CHECK(rc == HTKV_ETOOSMALL && n == wl, "%s: small buffer gave rc %d len %zu (want %zu)", k,
             rc, n, wl);
    void *copy = NULL;
    rc = htkv_get_alloc(w->st->db, k, kl, &copy, &n);
    bool same = rc == 0 && n == wl && memcmp(copy, want, wl) == 0;
    htkv_free(copy);
    CC_CHECK(same, "%s: get_alloc rc %d len %zu differs from the model", k, rc, n);
    return true;
}

/* New key number @p k of thread @p t: written once, never changed (it grows the index). */
static size_t
nkey_name(unsigned t, unsigned k, char *out)
{
    return (size_t)snprintf(out, 16, "n%02u-%06u", t, k);
}

static bool
n_check(struct warg *w, unsigned k, bool fresh)
{
    char key[16];
    size_t kl = nkey_name(w->id, k, key);
    unsigned char buf[CC_VAL_MAX], want[CC_VAL_MAX];
    size_t wl = cc_value(k, 2000000u + w->id * 100000u + k, 0, want), n = 0;
    uint64_t ver = 0;
    int rc = htkv_get_version(w->st->db, key, kl, buf, sizeof(buf), &n, &ver);
    CC_CHECK(rc == 0 && n == wl && memcmp(buf, want, n) == 0,
             "%s: rc %d (%s) len %zu, want the value put (len %zu)", key, rc, htkv_strerror(rc), n,
             wl);
    return fresh ? note_write_version(w, ver, "put of a new key") : true;
}

static bool
p_new_key(struct warg *w)
{
    unsigned k = w->nnew;
    char key[16];
    size_t kl = nkey_name(w->id, k, key);
    unsigned char v[CC_VAL_MAX];
    size_t vl = cc_value(k, 2000000u + w->id * 100000u + k, 0, v);
    int rc = htkv_put(w->st->db, key, kl, vl > 0 ? v : NULL, vl);
    CC_CHECK(rc == 0, "put %s: rc %d (%s)", key, rc, htkv_strerror(rc));
    w->nnew++;
    return n_check(w, k, true);
}

/* htkv_flush() and htkv_stats() run while the other threads write. */
static bool
p_flush_or_stats(struct warg *w)
{
    if (rnd(w, 2) == 0) {
        int rc = htkv_flush(w->st->db);
        CC_CHECK(rc == 0, "flush: rc %d (%s)", rc, htkv_strerror(rc));
        return true;
    }
    struct htkv_stats st;
    int rc = htkv_stats(w->st->db, &st);
    CC_CHECK(rc == 0, "stats: rc %d (%s)", rc, htkv_strerror(rc));
    CC_CHECK(st.last_version >= w->last_write_version && st.shard_count == 4 &&
                 st.worker_threads == w->st->mode.workers && !st.failed && !st.no_space,
             "stats: last_version %llu (this thread wrote %llu), %u shards, %u workers, "
             "failed %d, no_space %d",
             (unsigned long long)st.last_version, (unsigned long long)w->last_write_version,
             st.shard_count, st.worker_threads, st.failed, st.no_space);
    return true;
}

static bool
phase1_op(struct warg *w)
{
    unsigned r = rnd(w, 100);
    if (r < 22) {
        return p_check(w, rnd(w, PRIV_KEYS), false);
    } else if (r < 40) {
        return p_put(w);
    } else if (r < 48) {
        return p_new_key(w);
    } else if (r < 57) {
        return p_delete(w);
    } else if (r < 67) {
        return p_batch(w, false, false);
    } else if (r < 76) {
        return p_batch(w, true, false);
    } else if (r < 81) {
        return p_async1(w, false);
    } else if (r < 85) {
        return p_async1(w, true);
    } else if (r < 89) {
        return p_batch(w, rnd(w, 2) == 0, true);
    } else if (r < 91) {
        return p_flush_or_stats(w);
    } else {
        return p_small_buffer(w);
    }
}

static bool
phase1_verify_all(struct warg *w)
{
    for (unsigned i = 0; i < PRIV_KEYS; i++) {
        if (!p_check(w, i, false)) {
            return false;
        }
    }
    for (unsigned k = 0; k < w->nnew; k++) {
        if (!n_check(w, k, false)) {
            return false;
        }
    }
    return true;
}

static void *
phase1_main(void *arg)
{
    struct warg *w = arg;
    for (unsigned n = 0; n < w->st->ops1 && !cc_failed(); n++) {
        if (!phase1_op(w)) {
            fprintf(stderr, "thread %u: phase 1 failed at op %u\n", w->id, n);
            return NULL;
        }
    }
    if (!cc_failed()) {
        (void)phase1_verify_all(w);
    }
    return NULL;
}

/* ---- phase 2: shared keys ------------------------------------------------------------------- */

static struct logent *
log_add(struct warg *w, uint32_t key, bool del, uint64_t tag)
{
    if (w->nlog == w->log_cap) {
        return NULL; /* sized for the worst case: cannot happen */
    }
    struct logent *e = &w->log[w->nlog++];
    e->key = key;
    e->del = del;
    e->tag = tag;
    e->version = 0;
    e->rc = 0;
    e->st = w->st;
    atomic_init(&e->state, 0);
    return e;
}

static void
log_done_cb(int rc, uint64_t version, void *ctx)
{
    struct logent *e = ctx;
    struct stress *st = e->st;
    e->rc = rc;
    e->version = version;
    atomic_store_explicit(&e->state, 2, memory_order_release);
    atomic_fetch_sub_explicit(&st->pending, 1, memory_order_release);
}

/* Read shared key @p i: intact, its own key's value, never older than what this thread saw. */
static bool
s_read(struct warg *w, unsigned i, uint64_t at_least)
{
    char k[16];
    size_t kl = skey_name(i, k);
    unsigned char buf[CC_VAL_MAX];
    size_t n = 0;
    uint64_t ver = 0, tag = 0;
    int rc = htkv_get_version(w->st->db, k, kl, buf, sizeof(buf), &n, &ver);
    if (rc == HTKV_ENOTFOUND) {
        return true; /* deleted: the version of a delete is not visible to gets */
    }
    CC_CHECK(rc == 0, "get %s: rc %d (%s)", k, rc, htkv_strerror(rc));
    CC_CHECK(cc_value_decode(buf, n, i, &tag), "get %s: %zu bytes that no write of this key stored",
             k, n);
    CC_CHECK(ver >= w->seen[i] && ver >= at_least,
             "get %s: version %llu older than %llu seen or written before by this thread", k,
             (unsigned long long)ver,
             (unsigned long long)(w->seen[i] > at_least ? w->seen[i] : at_least));
    w->seen[i] = ver;
    return true;
}

/* A batch of 1..3 puts and deletes of shared keys; logs the last operation on each key. */
static bool
s_batch(struct warg *w, bool with_delete)
{
    htkv_batch *b = NULL;
    CC_CHECK(htkv_batch_create(&b) == 0, "batch_create");
    int8_t last[SHARED_KEYS];
    uint64_t tags[SHARED_KEYS];
    memset(last, 0, sizeof(last));
    unsigned n = 1 + rnd(w, 3);
    bool ok = true;
    for (unsigned j = 0; j < n && ok; j++) {
        unsigned i = rnd(w, SHARED_KEYS);
        char k[16];
        size_t kl = skey_name(i, k);
        if (with_delete && j == 0) {
            ok = htkv_batch_delete(b, k, kl) == 0;
            last[i] = 2;
        } else {
            unsigned char v[CC_VAL_MAX];
            tags[i] = new_tag(w);
            size_t vl = cc_value(tags[i], i, CC_VAL_HDR, v);
            ok = htkv_batch_put(b, k, kl, v, vl) == 0;
            last[i] = 1;
        }
    }
    int rc = ok ? htkv_write(w->st->db, b) : -EINVAL;
    uint64_t v = htkv_batch_version(b);
    htkv_batch_destroy(b);
    CC_CHECK(rc == 0 && v != 0, "shared batch: rc %d (%s) version %llu", rc, htkv_strerror(rc),
             (unsigned long long)v);
    if (!note_write_version(w, v, "shared batch")) {
        return false;
    }
    for (unsigned i = 0; i < SHARED_KEYS; i++) {
        if (last[i] == 0) {
            continue;
        }
        struct logent *e = log_add(w, i, last[i] == 2, last[i] == 1 ? tags[i] : 0);
        CC_CHECK(e != NULL, "log full");
        e->version = v;
        if (v > w->seen[i]) {
            w->seen[i] = v;
        }
        /* Read-your-writes: a get after the write returned sees it or something newer. */
        if (last[i] == 1 && !s_read(w, i, v)) {
            return false;
        }
    }
    return true;
}

static bool
s_async(struct warg *w, bool del)
{
    unsigned i = rnd(w, SHARED_KEYS);
    char k[16];
    size_t kl = skey_name(i, k);
    unsigned char v[CC_VAL_MAX];
    uint64_t tag = del ? 0 : new_tag(w);
    size_t vl = cc_value(tag, i, CC_VAL_HDR, v);
    struct logent *e = log_add(w, i, del, tag);
    CC_CHECK(e != NULL, "log full");
    atomic_store(&e->state, 1);
    atomic_fetch_add(&w->st->pending, 1);
    int rc;
    for (;;) {
        rc = del ? htkv_delete_async(w->st->db, k, kl, log_done_cb, e)
                 : htkv_put_async(w->st->db, k, kl, v, vl, log_done_cb, e);
        if (rc != HTKV_EBUSY) {
            break;
        }
        sched_yield();
    }
    if (rc != 0) {
        atomic_fetch_sub(&w->st->pending, 1);
    }
    CC_CHECK(rc == 0, "shared %s_async: rc %d (%s)", del ? "delete" : "put", rc, htkv_strerror(rc));
    return true;
}

/* Increment the shared counter with a conditional batch, retrying on conflicts. */
static bool
s_cas(struct warg *w)
{
    htkv_db *db = w->st->db;
    htkv_batch *b = NULL;
    CC_CHECK(htkv_batch_create(&b) == 0, "batch_create");
    /* In ALWAYS a condition sees writes that are staged but not yet durable, while gets see
     * them only once their group sync completes (~ms): conflicts come in bursts, retry for a
     * while. */
    uint64_t deadline = cc_now_ns() + 30ull * 1000000000ull;
    for (unsigned tries = 0; cc_now_ns() < deadline; tries++) {
        uint64_t cur = 0, ver = 0;
        size_t n = 0;
        int rc = htkv_get_version(db, "ctr", 3, &cur, sizeof(cur), &n, &ver);
        if (rc == HTKV_ENOTFOUND) {
            cur = 0;
        } else if (rc != 0 || n != sizeof(cur)) {
            htkv_batch_destroy(b);
            CC_CHECK(false, "get ctr: rc %d (%s) len %zu", rc, htkv_strerror(rc), n);
        }
        if (cur < w->ctr_seen) {
            htkv_batch_destroy(b);
            CC_CHECK(false, "counter went back from %llu to %llu", (unsigned long long)w->ctr_seen,
                     (unsigned long long)cur);
        }
        w->ctr_seen = cur;
        uint64_t next = cur + 1;
        htkv_batch_clear(b);
        if (htkv_batch_check(b, "ctr", 3, ver) != 0 ||
            htkv_batch_put(b, "ctr", 3, &next, sizeof(next)) != 0) {
            htkv_batch_destroy(b);
            CC_CHECK(false, "batch_check/put");
        }
        rc = htkv_write(db, b);
        if (rc == 0) {
            uint64_t v = htkv_batch_version(b);
            htkv_batch_destroy(b);
            CC_CHECK(v > ver, "counter update got version %llu after %llu", (unsigned long long)v,
                     (unsigned long long)ver);
            atomic_fetch_add(&w->st->cas_ok, 1);
            w->ctr_seen = next;
            return note_write_version(w, v, "counter update");
        }
        if (rc != HTKV_ECONFLICT) {
            htkv_batch_destroy(b);
            CC_CHECK(false, "counter update: rc %d (%s)", rc, htkv_strerror(rc));
        }
        atomic_fetch_add(&w->st->cas_conflicts, 1);
        if (tries < 16) {
            sched_yield();
        } else {
            cc_sleep_ms(1);
        }
    }
    htkv_batch_destroy(b);
    cc_fail_at(__FILE__, __LINE__, "counter update: conflicts for 30 s in a row");
    return false;
}

static bool
phase2_op(struct warg *w)
{
    unsigned r = rnd(w, 100);
    if (r < 30) {
        return s_read(w, rnd(w, SHARED_KEYS), 0);
    } else if (r < 52) {
        return s_batch(w, false);
    } else if (r < 60) {
        return s_batch(w, true);
    } else if (r < 72) {
        return s_async(w, false);
    } else if (r < 76) {
        return s_async(w, true);
    } else {
        return s_cas(w);
    }
}

static void *
phase2_main(void *arg)
{
    struct warg *w = arg;
    for (unsigned n = 0; n < w->st->ops2 && !cc_failed(); n++) {
        if (!phase2_op(w)) {
            fprintf(stderr, "thread %u: phase 2 failed at op %u\n", w->id, n);
            return NULL;
        }
    }
    return NULL;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* What each shared key must hold: the logged write with the highest version. */
struct expect {
    bool present;
    uint64_t tag, version;
};

static bool
phase2_expectations(struct warg *args, struct expect *ex, uint64_t *max_version)
{
    memset(ex, 0, SHARED_KEYS * sizeof(*ex));
    uint64_t top[SHARED_KEYS] = { 0 };
    size_t cap = 0, nall = 0;
    for (unsigned t = 0; t < NTHREADS; t++) {
        cap += args[t].nlog;
    }
    /* (key << 56 | version) of every write: no two writes of one key share a version. */
    uint64_t *all = calloc(cap + 1, sizeof(*all));
    CC_CHECK(all != NULL, "out of memory");
    for (unsigned t = 0; t < NTHREADS; t++) {
        for (size_t j = 0; j < args[t].nlog; j++) {
            struct logent *e = &args[t].log[j];
            int state = atomic_load_explicit(&e->state, memory_order_acquire);
            CC_CHECK(state != 1, "thread %u write %zu: callback never ran", t, j);
            if (state == 2) {
                if (e->del && e->rc == HTKV_ENOTFOUND) {
                    CC_CHECK(e->version == 0, "absent delete reported version %llu",
                             (unsigned long long)e->version);
                    continue; /* deleted nothing */
                }
                CC_CHECK(e->rc == 0 && e->version != 0, "async write: rc %d version %llu", e->rc,
                         (unsigned long long)e->version);
            }
            CC_CHECK(nall < cap, "log overflow");
            all[nall++] = ((uint64_t)e->key << 56) | e->version;
            if (e->version > top[e->key]) {
                top[e->key] = e->version;
                ex[e->key] = (struct expect){ !e->del, e->tag, e->version };
            }
            if (e->version > *max_version) {
                *max_version = e->version;
            }
        }
    }
    qsort(all, nall, sizeof(*all), cmp_u64);
    bool unique = true;
    for (size_t j = 1; j < nall && unique; j++) {
        unique = all[j] != all[j - 1];
    }
    free(all);
    CC_CHECK(unique, "two writes of one shared key got the same version");
    return true;
}

/* Every key (private of each thread, shared, counter) holds what it must. */
static bool
verify_store(htkv_db *db, struct warg *args, const struct expect *ex, uint64_t cas_ok)
{
    for (unsigned t = 0; t < NTHREADS; t++) {
        args[t].st->db = db;
        if (!phase1_verify_all(&args[t])) {
            return false;
        }
    }
    for (unsigned i = 0; i < SHARED_KEYS; i++) {
        char k[16];
        size_t kl = skey_name(i, k);
        unsigned char buf[CC_VAL_MAX], want[CC_VAL_MAX];
        size_t n = 0;
        uint64_t ver = 0;
        int rc = htkv_get_version(db, k, kl, buf, sizeof(buf), &n, &ver);
        if (!ex[i].present) {
            CC_CHECK(rc == HTKV_ENOTFOUND, "%s: rc %d, want absent (last write: a delete)", k, rc);
            continue;
        }
        size_t wl = cc_value(ex[i].tag, i, CC_VAL_HDR, want);
        CC_CHECK(rc == 0 && ver == ex[i].version && n == wl && memcmp(buf, want, n) == 0,
                 "%s: rc %d version %llu, want the last write (version %llu, tag %llx)", k, rc,
                 (unsigned long long)ver, (unsigned long long)ex[i].version,
                 (unsigned long long)ex[i].tag);
    }
    uint64_t ctr = 0;
    size_t n = 0;
    int rc = htkv_get(db, "ctr", 3, &ctr, sizeof(ctr), &n);
    if (cas_ok == 0) {
        CC_CHECK(rc == HTKV_ENOTFOUND, "ctr: rc %d, want absent", rc);
    } else {
        CC_CHECK(rc == 0 && ctr == cas_ok, "ctr: rc %d value %llu, want %llu increments", rc,
                 (unsigned long long)ctr, (unsigned long long)cas_ok);
    }
    return true;
}

static void
run_mode(const struct cc_mode *m, uint64_t seed, unsigned round)
{
    cc_set_mode(m);
    bool always = m->sync == HTKV_SYNC_ALWAYS;
    char *dir = tu_tmpdir("stress");
    htkv_config cfg;
    cc_config(&cfg, dir, m);
    struct stress st = { .mode = *m };
    /* Sized for ~1-3 s per mode on 2 cores (18 modes, under a minute in all). ALWAYS pays an
     * fdatasync per group of writes. */
    st.ops1 = cc_ops(always ? 300 : 3000);
    st.ops2 = cc_ops(always ? 300 : 3000);
    atomic_init(&st.pending, 0);
    atomic_init(&st.cas_ok, 0);
    atomic_init(&st.cas_conflicts, 0);
    st.db = cc_open(&cfg);
    struct warg *args = calloc(NTHREADS, sizeof(*args));
    assert_non_null(args);
    for (unsigned t = 0; t < NTHREADS; t++) {
        args[t].st = &st;
        args[t].id = t;
        args[t].rng = cc_subseed(seed, round, t);
        args[t].log_cap = (size_t)st.ops2 * 3 + 8; /* at most 3 logged writes per op */
        args[t].log = calloc(args[t].log_cap, sizeof(*args[t].log));
        assert_non_null(args[t].log);
    }
    uint64_t t0 = cc_now_ns();
    cc_run_threads(NTHREADS, phase1_main, args, sizeof(*args));
    cc_assert_ok();
    uint64_t t1 = cc_now_ns();
    cc_run_threads(NTHREADS, phase2_main, args, sizeof(*args));
    cc_assert_ok();
    /* Asynchronous writes still in flight complete on their own (nothing waits for them). */
    uint64_t deadline = cc_now_ns() + 60ull * 1000000000ull;
    while (atomic_load_explicit(&st.pending, memory_order_acquire) != 0 && cc_now_ns() < deadline) {
        sched_yield();
    }
    assert_int_equal(atomic_load(&st.pending), 0);
    uint64_t t2 = cc_now_ns();

    struct expect ex[SHARED_KEYS];
    uint64_t max_version = 0;
    assert_true(phase2_expectations(args, ex, &max_version));
    uint64_t cas_ok = atomic_load(&st.cas_ok);
    assert_true(verify_store(st.db, args, ex, cas_ok));
    assert_true(tu_stats(st.db).last_version >= max_version);
    assert_int_equal(htkv_close(st.db), 0);

    /* Reopen with another worker count: the same state, the same versions. */
    struct cc_mode again = *m;
    again.workers = (m->workers + 1) % 3;
    cc_config(&cfg, dir, &again);
    htkv_db *db = cc_open(&cfg);
    assert_true(verify_store(db, args, ex, cas_ok));
    assert_true(tu_stats(db).last_version >= max_version);
    assert_int_equal(htkv_close(db), 0);
    cc_assert_ok();
    fprintf(stderr,
            "  %-36s phase 1: %u ops x %d threads in %4llu ms, phase 2: %u ops in %4llu ms "
            "(%llu counter updates, %llu conflicts)\n",
            cc_mode_text, st.ops1, NTHREADS, (unsigned long long)((t1 - t0) / 1000000), st.ops2,
            (unsigned long long)((t2 - t1) / 1000000), (unsigned long long)cas_ok,
            (unsigned long long)atomic_load(&st.cas_conflicts));

    for (unsigned t = 0; t < NTHREADS; t++) {
        free(args[t].log);
    }
    free(args);
    tu_rmrf(dir);
    free(dir);
}

/* Each sync mode on each I/O backend, with @p workers worker threads. */
static void
run_all_modes(unsigned workers, const char *test)
{
    uint64_t seed = cc_seed(test);
    static const int syncs[] = { HTKV_SYNC_NEVER, HTKV_SYNC_INTERVAL, HTKV_SYNC_ALWAYS };
    static const int backends[] = { HTKV_IO_URING, HTKV_IO_SYNC };
    unsigned round = 0;
    for (size_t s = 0; s < 3; s++) {
        for (size_t b = 0; b < 2; b++, round++) {
            if (backends[b] == HTKV_IO_URING && !cc_uring_available()) {
                continue;
            }
            struct cc_mode m = { workers, backends[b], syncs[s] };
            run_mode(&m, seed, round);
        }
    }
}

/* Goal: with writes done by the calling threads (inline), every operation of 8 threads on their
 * own keys matches a per-thread model at once, and racing writes to shared keys leave the write
 * with the highest version. Method: phase 1 model check after every op; phase 2 versioned writes
 * and a CAS counter; verify, reopen with 1 worker, verify again; each sync mode and io setting. */
static void
test_stress_inline_model_and_races(void **state)
{
    (void)state;
    run_all_modes(0, "test_stress_inline_model_and_races");
}

/* Goal: the same with one worker thread that serves all four shards (every write is handed over
 * through its MPSC queue, group commit in ALWAYS). Method: as the inline test; reopen with two
 * workers. */
static void
test_stress_one_worker_model_and_races(void **state)
{
    (void)state;
    run_all_modes(1, "test_stress_one_worker_model_and_races");
}

/* Goal: the same with two workers: batches span shards of both workers, and a worker syncs
 * shards of the other (ALWAYS). Method: as the inline test; reopen inline. */
static void
test_stress_two_workers_model_and_races(void **state)
{
    (void)state;
    run_all_modes(2, "test_stress_two_workers_model_and_races");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress_inline_model_and_races),
        cmocka_unit_test(test_stress_one_worker_model_and_races),
        cmocka_unit_test(test_stress_two_workers_model_and_races),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
