/*
 * ordered.h - the sorted model and the query checks shared by the tests of ordered queries
 * (tests/integration/test_prefix_range.c, test_run.c, test_iterators.c).
 *
 * The model is a sorted array of (key, value) pairs kept by the test; the checks read an
 * iterator and compare every item with the model's range, in strictly increasing unsigned byte
 * order. ordered_fuzz() is the seeded model-based fuzz test (STYLE S7.3): random puts, deletes,
 * batches (a key may appear twice in one) and reopens run against the store and the model; every
 * few operations random prefix and range queries (from the store, and from views opened earlier
 * and checked against a copy of the model taken when they opened) must return exactly the
 * model's items. Keys are built from the alphabet {0x00, 0x01, 'a', 0x7F, 0xFF} so that prefixes
 * collide and the byte order of 0x00 and 0xFF and of a key against its own extensions is
 * exercised. ordered_alloc_faults() is the allocation-failure test of queries.
 */
#ifndef HTKV_TESTS_ORDERED_H
#define HTKV_TESTS_ORDERED_H

#include "tests/support/testutil.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define ORD_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define ORD_SANITIZED 1
#endif
#endif
#ifndef ORD_SANITIZED
#define ORD_SANITIZED 0
#endif

struct ment {
    unsigned char *key; /* one allocation: key then value */
    size_t klen;
    size_t vlen;
};

static inline const unsigned char *
ment_val(const struct ment *e)
{
    return e->key + e->klen;
}

struct model {
    struct ment *e;
    size_t n, cap;
};

/* Where queries go: the store itself, or a view. */
struct target {
    htkv_db *db;
    htkv_view *view;
};

/* What a query is, for failure messages. */
extern char qdesc[512];

/* Helpers. */
int key_cmp(const void *a, size_t alen, const void *b, size_t blen);
const char *hex(const void *p, size_t n);
void put_ok(htkv_db *db, const void *k, size_t kl, const void *v, size_t vl);

/* The model: a sorted array of (key, value). */
size_t model_lower(const struct model *m, const void *key, size_t klen);
bool model_has(const struct model *m, const void *key, size_t klen, size_t *at);
void model_put(struct model *m, const void *key, size_t klen, const void *val, size_t vlen);
bool model_del(struct model *m, const void *key, size_t klen);
void model_clone(struct model *dst, const struct model *src);
void model_free(struct model *m);
void model_prefix_range(const struct model *m, const void *p, size_t plen, size_t *lo, size_t *hi);
void model_scan_range(const struct model *m, const void *s, size_t slen, const void *e, size_t elen,
                      size_t *lo, size_t *hi);

/* Checking an iterator against the model. */
size_t iter_expect(htkv_iter *it, const struct model *m, size_t *pos, size_t hi, size_t max,
                   unsigned char *prev, size_t *prevlen, bool *ended);
int open_prefix(const struct target *t, const void *p, size_t plen, htkv_iter **it);
int open_scan(const struct target *t, const void *s, size_t slen, const void *e, size_t elen,
              htkv_iter **it);
void check_iter(htkv_iter *it, const struct model *m, size_t lo, size_t hi, unsigned how,
                uint64_t *rng);
void check_prefix(const struct target *t, const struct model *m, const void *p, size_t plen,
                  unsigned how, uint64_t *rng);
void check_scan(const struct target *t, const struct model *m, const void *s, size_t slen,
                const void *e, size_t elen, unsigned how, uint64_t *rng);

/* The fuzz test: ordered_fuzz(shards, fuzz_ops(), htkv_run_eager level). */
void ordered_fuzz(unsigned shards, long nops, int runs);
long fuzz_ops(void);

/* Edges: counting the items of a query (checking strict order). */
size_t drain(htkv_iter *it);
size_t count_prefix(htkv_db *db, const void *p, size_t plen);
size_t count_scan(htkv_db *db, const void *s, size_t slen, const void *e, size_t elen);

/* Allocation failures in queries, without (false) or with sorted runs (true). */
void ordered_alloc_faults(bool runs);

#endif
