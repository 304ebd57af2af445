/*
 * census.h - the census of the Argon2 parameter sets that stored password hashes use, and the
 * costs of the dummy verification of an unknown user drawn from it (see census.c).
 */
#ifndef HTKV_AUTH_CENSUS_H
#define HTKV_AUTH_CENSUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <htkv/htkv.h>

#include "auth/codec.h"
#include "auth/pwhash.h"

/* One census per user list bucket (first hex digit of the user id). */
#define CENSUS_BUCKETS 16

/* Parameter sets with their user counts, strictly ascending (htkv_codec_census_cmp). */
struct census_sets {
    struct codec_census_set *v; /* malloc'ed, cap entries */
    size_t count;
    size_t cap;
};

/* What a handle last read of the census records: one entry per bucket, and their sum. */
struct census_cache {
    pthread_mutex_t lock; /* guards everything below */
    bool valid[CENSUS_BUCKETS];
    uint64_t version[CENSUS_BUCKETS];      /* census record version read; 0 = absent */
    uint64_t list_version[CENSUS_BUCKETS]; /* version 0: list version the sets were built from */
    struct census_sets bucket[CENSUS_BUCKETS];
    struct census_sets total; /* the buckets merged */
    uint64_t total_users;
};

struct htkv_auth;
struct core_snap;

/* A writer's view of one bucket's census, read inside a transaction (htkv_core_txn). */
struct census_edit {
    unsigned bucket;
    uint64_t version; /* as read; 0 = absent (then built from the list and the users) */
    struct census_sets sets;
};

/*
 * Read the census of @p user_id's bucket into @p e and add the condition "unchanged since" to
 * @p b. An absent census is counted from the bucket's list and user records. 0; HTKV_ECORRUPT;
 * HTKV_EAUTH; -ENOMEM; engine errors. Free @p e with htkv_census_edit_free() in every case.
 */
int htkv_census_edit_begin(struct htkv_auth *a, htkv_batch *b, const unsigned char *user_id,
                           struct census_edit *e);
/* Count one more (@p delta = +1) or one fewer (-1) hash with @p costs. 0 or -ENOMEM. A count
 * that would go below zero stays absent (the census is never made to fail a delete). */
int htkv_census_edit_count(struct census_edit *e, const struct pwhash_hash *costs, int delta);
/* Seal the edited census and add its put to @p b. 0; -ENOMEM; engine errors. */
int htkv_census_edit_put(struct htkv_auth *a, const struct core_snap *s, htkv_batch *b,
                         const struct census_edit *e);
void htkv_census_edit_free(struct census_edit *e);

/* Cache of a handle: 0 or an errno from pthread_mutex_init (negated). */
int htkv_census_cache_init(struct census_cache *c);
void htkv_census_cache_fini(struct census_cache *c);
/*
 * Bring the handle's cache up to date with the census records (one version probe per bucket;
 * a changed record is read and opened). Buckets that fail keep what the cache had. 0 or the
 * first error (HTKV_ECORRUPT, HTKV_EAUTH, -ENOMEM, engine errors).
 */
int htkv_census_refresh(struct htkv_auth *a);
/*
 * Costs (memory, iterations, lanes; salt and hash zeroed) of the dummy verification for
 * @p name (any NUL-terminated string, valid name or not): refresh the cache (errors ignored),
 * then pick the set whose share of the stored users contains a keyed hash of the ASCII-folded
 * name. The configured costs when no user is counted.
 */
void htkv_census_dummy_costs(struct htkv_auth *a, const char *name, struct pwhash_hash *costs);

#endif
