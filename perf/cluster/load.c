/*
 * load.c - htkv-cluster-bench's load driver: N client threads, each with its own connection to
 * the leader, run one operation after another (closed loop). A warm-up is not recorded; in the
 * measured window every operation that started and ended inside it is timed with
 * CLOCK_MONOTONIC and kept; throughput = operations done in the window / its length, latency
 * percentiles from every kept sample. CB_FILL instead writes keys p000..0 to keys-1 (the keys
 * that gets read), split among the threads, untimed.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perf/cluster/cbench.h"

enum { PHASE_WARM = 0, PHASE_MEASURE = 1, PHASE_STOP = 2 };

struct worker {
    const struct cb_load *l;
    int id;
    _Atomic int *phase;
    uint64_t *lat; /* ns of each measured operation */
    size_t n, cap;
    uint64_t refused, broken;
    pthread_t th;
};

static void
keep(struct worker *w, uint64_t ns)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 65536;
        uint64_t *p = realloc(w->lat, cap * sizeof(*p));
        if (p == NULL) {
            return;
        }
        w->lat = p;
        w->cap = cap;
    }
    w->lat[w->n++] = ns;
}

static void
make_key(const struct worker *w, uint64_t seq, uint64_t *rng, char *key)
{
    char tmp[CB_KEY_BYTES + 1];
    if (w->l->op == CB_PUT) {
        uint64_t k = w->l->keys > 0 ? seq % w->l->keys : seq % 1000000000000u;
        snprintf(tmp, sizeof(tmp), "%c%03d%012" PRIu64, w->l->tag, w->id, k);
    } else if (w->l->op == CB_FILL) {
        snprintf(tmp, sizeof(tmp), "p%015" PRIu64, seq);
    } else {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        snprintf(tmp, sizeof(tmp), "p%015" PRIu64, *rng % w->l->keys);
    }
    memcpy(key, tmp, CB_KEY_BYTES);
}

/* One operation, reconnecting after a broken connection. */
static int
one(struct worker *w, struct cb_conn *c, const char *key, const char *val)
{
    if (c->fd < 0 && cb_conn_open(c, w->l->system, w->l->endpoint) != 0) {
        cb_sleep_ms(10);
        return -1;
    }
    int rc = cb_op(c, w->l->op, key, val, w->l->vlen);
    if (rc < 0) {
        cb_conn_close(c);
    }
    return rc;
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct cb_conn *c = malloc(sizeof(*c));
    char *val = malloc(w->l->vlen + 1);
    if (c == NULL || val == NULL) {
        abort();
    }
    c->fd = -1;
    memset(val, 'v', w->l->vlen);
    uint64_t rng = 0x9e3779b97f4a7c15ull * (uint64_t)(w->id + 1), seq = (uint64_t)w->id;
    char key[CB_KEY_BYTES];
    uint64_t step = w->l->op == CB_FILL ? (uint64_t)w->l->threads : 1;
    if (w->l->op != CB_FILL) {
        seq = 0;
    }
    while (atomic_load(w->phase) != PHASE_STOP) {
        if (w->l->op == CB_FILL && (seq >= w->l->keys || w->refused + w->broken > 1000)) {
            break; /* done, or the cluster keeps refusing: the caller sees too few keys */
        }
        make_key(w, seq, &rng, key);
        int before = atomic_load(w->phase);
        uint64_t t0 = cb_now_ns();
        int rc = one(w, c, key, val);
        uint64_t t1 = cb_now_ns();
        if (rc == 0) {
            seq += step;
        }
        if (before != PHASE_MEASURE || atomic_load(w->phase) != PHASE_MEASURE) {
            continue;
        }
        if (rc == 0) {
            keep(w, t1 - t0);
        } else if (rc > 0) {
            w->refused++;
        } else {
            w->broken++;
        }
    }
    cb_conn_close(c);
    free(c);
    free(val);
    return NULL;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void
summarize(struct worker *ws, int n, double secs, struct cb_result *r)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        total += ws[i].n;
    }
    uint64_t *all = malloc((total + 1) * sizeof(*all));
    size_t at = 0;
    memset(r, 0, sizeof(*r));
    for (int i = 0; i < n; i++) {
        if (all != NULL) {
            memcpy(all + at, ws[i].lat, ws[i].n * sizeof(*all));
        }
        at += ws[i].n;
        r->refused += ws[i].refused;
        r->broken += ws[i].broken;
        free(ws[i].lat);
    }
    r->ops = total;
    r->ops_s = (double)total / secs;
    if (all != NULL && total > 0) {
        qsort(all, total, sizeof(*all), cmp_u64);
        r->p50_us = (double)all[total / 2] / 1e3;
        r->p99_us = (double)all[(size_t)((double)total * 0.99)] / 1e3;
        r->max_us = (double)all[total - 1] / 1e3;
    }
    free(all);
}

int
cb_load_run(const struct cb_load *l, struct cb_result *r)
{
    struct worker *ws = calloc((size_t)l->threads, sizeof(*ws));
    _Atomic int phase = l->op == CB_FILL ? PHASE_MEASURE : PHASE_WARM;
    if (ws == NULL) {
        return -1;
    }
    for (int i = 0; i < l->threads; i++) {
        ws[i].l = l;
        ws[i].id = i;
        ws[i].phase = &phase;
        if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i]) != 0) {
            atomic_store(&phase, PHASE_STOP);
            for (int j = 0; j < i; j++) {
                pthread_join(ws[j].th, NULL);
            }
            free(ws);
            return -1;
        }
    }
    uint64_t t0 = cb_now_ns();
    if (l->op != CB_FILL) {
        cb_sleep_ms((unsigned)(l->warm_s * 1e3));
        atomic_store(&phase, PHASE_MEASURE);
        t0 = cb_now_ns();
        cb_sleep_ms((unsigned)(l->secs * 1e3));
        atomic_store(&phase, PHASE_STOP);
    }
    double secs = (double)(cb_now_ns() - t0) / 1e9;
    for (int i = 0; i < l->threads; i++) {
        pthread_join(ws[i].th, NULL);
    }
    if (l->op == CB_FILL) {
        secs = (double)(cb_now_ns() - t0) / 1e9;
    }
    summarize(ws, l->threads, secs, r);
    free(ws);
    return 0;
}
