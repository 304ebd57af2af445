/*
 * crash_auth_snapshot.c - kill -9 a process that writes auth records, or that exports and
 * restores snapshots, at random moments and right after its N-th fdatasync/fsync; every
 * acknowledged call must survive, whole.
 *
 * Both tests use the kill loop of crash_kill.c: each cycle forks a child that opens the store and
 * runs a seeded sequence of calls as fast as it can, reporting each call through a pipe after it
 * returned (one fixed-size write, under PIPE_BUF, so a report is whole or absent). The parent
 * SIGKILLs the child after 20-200 ms; every other cycle the child also kills itself right after
 * its N-th sync (N random in 1..64, HTKV_CRASH_IO_KILLS=0: timer kills only). The parent reopens
 * the store and compares it with its model of the acknowledged calls; the one call in flight may
 * be there or not, but whole. Background compaction runs every 25 ms (with its snapshots) and a
 * full pass every 200 calls, so kills land inside compaction too.
 *
 * The child is forked from the parent, so it starts from the parent's model, and each call is a
 * pure function of (seed, sequence number, model): the parent regenerates the in-flight call.
 * What the call returns that is random (user and API key ids, tokens) comes in the report.
 *
 * Auth (test_crash_auth_*): users are created, get new passwords, get and lose API keys and are
 * deleted, between plain puts and deletes that make segments rotate (64 KiB). After each kill:
 * every live user has its last acknowledged password (the previous one fails), deleted users are
 * gone (by name and by id), every live API key authenticates to its user, revoked ones fail, each
 * user lists exactly its keys, and the number of raw auth records of each kind matches.
 *
 * Snapshots (test_crash_snapshot_*): puts, deletes and batches, exports to one of NSLOTS files in
 * the store directory (rewriting the slot's file) and restores of a slot whose contents the
 * parent knows. After each kill the store equals the model, or for an in-flight restore the
 * snapshot's contents exactly; every slot's file checks whole (htkv_snapshot_file_version) and a
 * copy of it restores into a scratch store with exactly the contents exported; a half-written
 * file (PATH.tmp left by the kill, or a copy of a slot cut short) is refused with HTKV_ECORRUPT
 * and changes nothing.
 *
 * 32 cycles per test (HTKV_CRASH_CYCLES=N for longer runs), each test in two sync modes.
 */
#include "tests/support/crashloop.h"
#include "tests/support/testutil.h"
#include "uring/ur_fault.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <htkv/auth.h>
#include <htkv/replication.h>

#define CYCLES 32 /* per test and sync mode; HTKV_CRASH_CYCLES=N for longer runs */
#define COMPACT_EVERY 200

/* ---- the kill loop --------------------------------------------------------------------------- */

struct key_state {
    bool present;
    uint16_t vlen;
    uint64_t tag; /* value bytes = tu_fill(vlen, tag) */
};

static uint64_t
op_tag(uint64_t seq, int j)
{
    return seq * 16 + (uint64_t)j + 1;
}

/* The generator state of call @p seq. */
static uint64_t
op_rng(uint64_t seed, uint64_t seq)
{
    uint64_t st = seed ^ (seq * 0x9E3779B97F4A7C15ull) ^ 0xA0761D6478BD642Full;
    if (st == 0) {
        st = 1;
    }
    for (int i = 0; i < 3; i++) {
        tu_rand(&st);
    }
    return st;
}

/* Store configuration shared by both tests: small segments, background compaction. */
static void
loop_config(htkv_config *cfg, const char *dir, int sync_mode)
{
    tu_config(cfg, dir, sync_mode);
    cfg->max_segment_bytes = 64u << 10;
    cfg->fsync_interval_ms = 5;
    cfg->compaction_interval_ms = 25;
    cfg->compaction_min_garbage_ratio = 0.3;
}

/* Child side: open the store or exit. */
static htkv_db *
child_open(const htkv_config *cfg)
{
    htkv_db *db = NULL;
    int rc = htkv_open(cfg, &db);
    if (rc != 0) {
        fprintf(stderr, "child: htkv_open: %s (%s)\n", htkv_strerror(rc), htkv_last_error());
        _exit(2);
    }
    return db;
}

/* Child side: send one report; a failed call is reported, then ends the child. */
static void
child_report(int fd, const void *r, size_t n, int rc, uint64_t seq)
{
    if (write(fd, r, n) != (ssize_t)n) {
        _exit(5);
    }
    if (rc != 0) {
        fprintf(stderr, "child: call %llu failed: %s (%s)\n", (unsigned long long)seq,
                htkv_strerror(rc), htkv_last_error());
        _exit(3);
    }
}

/* Child side: a full compaction pass now and then (the kill may land anywhere in it). */
static void
child_compact(htkv_db *db, uint64_t seq)
{
    if (seq % COMPACT_EVERY == 0) {
        int rc = htkv_compact_now(db);
        if (rc != 0) {
            fprintf(stderr, "child: compact_now: %s (%s)\n", htkv_strerror(rc), htkv_last_error());
            _exit(6);
        }
    }
}

/* Does @p key of @p db hold what @p s says? */
static bool
value_matches(htkv_db *db, const char *key, size_t kl, const struct key_state *s,
              unsigned char *want)
{
    void *got = NULL;
    size_t n = 0;
    int rc = htkv_get_alloc(db, key, kl, &got, &n);
    bool ok;
    if (!s->present) {
        ok = rc == HTKV_ENOTFOUND;
    } else {
        tu_fill(want, s->vlen, s->tag);
        ok = rc == 0 && n == s->vlen && memcmp(got, want, n) == 0;
    }
    htkv_free(got);
    return ok;
}

/* Number of keys of @p db that start with @p prefix, or a negative error. */
static long long
count_prefix(htkv_db *db, const char *prefix)
{
    htkv_iter *it = NULL;
    int rc = htkv_get_prefix(db, prefix, strlen(prefix), &it);
    if (rc != 0) {
        return rc;
    }
    long long n = 0;
    while ((rc = htkv_iter_next(it, NULL, NULL, NULL, NULL)) == 1) {
        n++;
    }
    htkv_iter_destroy(it);
    return rc < 0 ? rc : n;
}

/* ---- auth ------------------------------------------------------------------------------------ */

#define NUSERS 12
#define NAPIKEYS 40
#define NPLAIN 200
/* Argon2id at the lowest costs the module accepts: 8 KiB (8 per lane), 1 pass, 1 lane. */
#define A_MEMORY_KIB 8u
#define A_ITERATIONS 1u

enum {
    A_PUT,
    A_DEL,
    A_CREATE_USER,
    A_CHANGE_PW,
    A_CREATE_KEY,
    A_REVOKE_KEY,
    A_DELETE_USER,
    A_AUTH_KEY, /* reads, and may write last_used_at: changes nothing the model holds */
};

struct auser {
    bool live;
    char id[HTKV_AUTH_ID_SIZE];      /* when live */
    uint32_t gen;                    /* password generation, when live */
    uint32_t prev_gen;               /* the password before the last change, 0 = none */
    char dead_id[HTKV_AUTH_ID_SIZE]; /* id of the last deleted user of this name, "" = none */
    uint32_t dead_gen;               /* its last password, 0 = none */
    uint32_t next_gen;               /* generations are never reused */
};

enum { K_FREE = 0, K_LIVE = 1, K_REVOKED = 2 };

struct akey {
    int state;
    int user;
    bool token_known; /* false: found applied in flight, only its id is known */
    char id[HTKV_AUTH_ID_SIZE];
    char token[HTKV_AUTH_TOKEN_SIZE];
};

struct amodel {
    struct auser u[NUSERS];
    struct akey k[NAPIKEYS];
    struct key_state p[NPLAIN];
};

struct aop {
    int kind;
    int user;  /* user slot */
    int key;   /* API key slot */
    int plain; /* plain key */
    uint16_t vlen;
};

/* The report of one auth call: fixed size, under PIPE_BUF (one atomic pipe write). */
struct areport {
    uint64_t seq;
    int32_t rc;
    int32_t kind;
    int32_t user;
    int32_t key;
    char id[HTKV_AUTH_ID_SIZE];       /* the new user's or API key's id */
    char token[HTKV_AUTH_TOKEN_SIZE]; /* the new API key's token */
};
_Static_assert(sizeof(struct areport) <= PIPE_BUF && sizeof(struct areport) <= TU_REPORT_MAX,
               "a report is one atomic pipe write");

struct actx {
    uint64_t seed;
    htkv_config cfg;
    struct amodel m;
    uint64_t next_seq;
    uint64_t acked;
    uint64_t by_kind[A_AUTH_KEY + 1]; /* acknowledged calls of each kind */
};

static const unsigned char a_master_key[HTKV_AUTH_KEY_BYTES] = {
    0x3c, 0x11, 0x7e, 0x42, 0x90, 0x05, 0xd8, 0x6b, 0x21, 0xaf, 0x54, 0xe3, 0x0c, 0x97, 0x38, 0xfa,
    0x66, 0x1d, 0xb2, 0x4f, 0x83, 0xc9, 0x70, 0x2e, 0x15, 0x5a, 0xe7, 0x8c, 0x39, 0xd4, 0x01, 0xbe,
};

static void
a_user_name(int u, char *buf)
{
    snprintf(buf, 32, "User-%02d", u);
}

static size_t
a_password(uint64_t seed, int u, uint32_t gen, char *buf)
{
    return (size_t)snprintf(buf, 64, "pw-%016llx-%02d-%u", (unsigned long long)seed, u, gen);
}

static size_t
a_plain_key(int i, char *buf)
{
    return (size_t)snprintf(buf, 32, "plain/%03d", i);
}

/* Child clock: every read is 61 s after the last, so each authentication writes last_used_at. */
static _Atomic int64_t child_now;

static int64_t
child_clock(void *ctx)
{
    (void)ctx;
    return atomic_fetch_add(&child_now, 61);
}

static void
a_auth_config(htkv_auth_config *c, bool child)
{
    htkv_auth_config_init(c);
    c->master_key = a_master_key;
    c->argon2_memory_kib = A_MEMORY_KIB;
    c->argon2_iterations = A_ITERATIONS;
    c->argon2_lanes = 1;
    c->max_concurrent_hashes = 1;
    if (child) {
        atomic_store(&child_now, (int64_t)time(NULL));
        c->clock_fn = child_clock;
    }
}

static void
a_gen(uint64_t seed, uint64_t seq, const struct amodel *m, struct aop *op)
{
    uint64_t st = op_rng(seed, seq);
    memset(op, 0, sizeof(*op));
    op->user = op->key = op->plain = -1;
    uint64_t r = tu_rand(&st) % 100;
    if (r < 40) {
        op->kind = r < 34 ? A_PUT : A_DEL;
        op->plain = (int)(tu_rand(&st) % NPLAIN);
        uint64_t v = tu_rand(&st);
        op->vlen = (uint16_t)(v % 8 == 0 ? 1000 + v % 3000 : v % 200);
        return;
    }
    int u = (int)(tu_rand(&st) % NUSERS);
    op->user = u;
    if (!m->u[u].live) {
        op->kind = A_CREATE_USER;
        return;
    }
    int free_slot = -1, nlive = 0, nknown = 0;
    for (int k = 0; k < NAPIKEYS; k++) {
        if (m->k[k].state == K_FREE && free_slot < 0) {
            free_slot = k;
        }
        nlive += m->k[k].state == K_LIVE;
        nknown += m->k[k].state == K_LIVE && m->k[k].token_known;
    }
    if (free_slot < 0) { /* reuse the first revoked slot */
        for (int k = 0; k < NAPIKEYS && free_slot < 0; k++) {
            if (m->k[k].state == K_REVOKED) {
                free_slot = k;
            }
        }
    }
    uint64_t s = tu_rand(&st) % 100;
    uint64_t pick = tu_rand(&st);
    op->kind = A_CHANGE_PW;
    if (s >= 25 && s < 55 && free_slot >= 0) {
        op->kind = A_CREATE_KEY;
        op->key = free_slot;
    } else if (s >= 55 && s < 72 && nlive > 0) {
        op->kind = A_REVOKE_KEY;
        int want = (int)(pick % (uint64_t)nlive);
        for (int k = 0; k < NAPIKEYS; k++) {
            if (m->k[k].state == K_LIVE && want-- == 0) {
                op->key = k;
            }
        }
        op->user = m->k[op->key].user;
    } else if (s >= 72 && s < 87 && nknown > 0) {
        op->kind = A_AUTH_KEY;
        int want = (int)(pick % (uint64_t)nknown);
        for (int k = 0; k < NAPIKEYS; k++) {
            if (m->k[k].state == K_LIVE && m->k[k].token_known && want-- == 0) {
                op->key = k;
            }
        }
        op->user = m->k[op->key].user;
    } else if (s >= 87) {
        op->kind = A_DELETE_USER;
    }
}

/* Apply call @p op (sequence @p seq) to @p m; @p id and @p token: what it returned. */
static void
a_apply(struct amodel *m, uint64_t seq, const struct aop *op, const char *id, const char *token)
{
    struct auser *u = op->user >= 0 ? &m->u[op->user] : NULL;
    switch (op->kind) {
    case A_PUT:
        m->p[op->plain] =
            (struct key_state){ .present = true, .vlen = op->vlen, .tag = op_tag(seq, 0) };
        break;
    case A_DEL:
        m->p[op->plain].present = false;
        break;
    case A_CREATE_USER:
        u->live = true;
        snprintf(u->id, sizeof(u->id), "%s", id);
        u->gen = ++u->next_gen;
        u->prev_gen = 0;
        break;
    case A_CHANGE_PW:
        u->prev_gen = u->gen;
        u->gen = ++u->next_gen;
        break;
    case A_CREATE_KEY: {
        struct akey *k = &m->k[op->key];
        memset(k, 0, sizeof(*k));
        k->state = K_LIVE;
        k->user = op->user;
        snprintf(k->id, sizeof(k->id), "%s", id);
        k->token_known = token != NULL && token[0] != '\0';
        if (k->token_known) {
            snprintf(k->token, sizeof(k->token), "%s", token);
        }
        break;
    }
    case A_REVOKE_KEY:
        m->k[op->key].state = K_REVOKED;
        break;
    case A_DELETE_USER:
        snprintf(u->dead_id, sizeof(u->dead_id), "%s", u->id);
        u->dead_gen = u->gen;
        u->live = false;
        u->id[0] = '\0';
        u->gen = u->prev_gen = 0;
        for (int k = 0; k < NAPIKEYS; k++) {
            if (m->k[k].state == K_LIVE && m->k[k].user == op->user) {
                m->k[k].state = K_REVOKED;
            }
        }
        break;
    default:
        break;
    }
}

/* The auth child: open store and auth, run calls forever. */
static void
a_child(void *vctx, uint64_t first_seq, int fd)
{
    struct actx *c = vctx;
    htkv_db *db = child_open(&c->cfg);
    htkv_auth_config acfg;
    a_auth_config(&acfg, true);
    htkv_auth *auth = NULL;
    int rc = htkv_auth_open_with(db, &acfg, &auth);
    if (rc != 0) {
        fprintf(stderr, "child: htkv_auth_open_with: %s\n", htkv_strerror(rc));
        _exit(2);
    }
    unsigned char val[4096];
    char key[32], name[32], pw[64], npw[64];
    for (uint64_t seq = first_seq;; seq++) {
        struct aop op;
        a_gen(c->seed, seq, &c->m, &op);
        struct areport r;
        memset(&r, 0, sizeof(r));
        r.seq = seq;
        r.kind = op.kind;
        r.user = op.user;
        r.key = op.key;
        struct auser *u = op.user >= 0 ? &c->m.u[op.user] : NULL;
        if (u != NULL) {
            a_user_name(op.user, name);
        }
        switch (op.kind) {
        case A_PUT: {
            size_t kl = a_plain_key(op.plain, key);
            tu_fill(val, op.vlen, op_tag(seq, 0));
            rc = htkv_put(db, key, kl, val, op.vlen);
            break;
        }
        case A_DEL: {
            size_t kl = a_plain_key(op.plain, key);
            rc = htkv_delete(db, key, kl);
            rc = rc == HTKV_ENOTFOUND ? 0 : rc;
            break;
        }
        case A_CREATE_USER: {
            struct htkv_auth_user out;
            size_t pl = a_password(c->seed, op.user, u->next_gen + 1, pw);
            rc = htkv_auth_create_user(auth, name, pw, pl, &out);
            if (rc == 0) {
                memcpy(r.id, out.id, sizeof(r.id));
            }
            break;
        }
        case A_CHANGE_PW: {
            size_t ol = a_password(c->seed, op.user, u->gen, pw);
            size_t nl = a_password(c->seed, op.user, u->next_gen + 1, npw);
            rc = htkv_auth_change_password(auth, name, pw, ol, npw, nl);
            break;
        }
        case A_CREATE_KEY: {
            struct htkv_auth_api_key out;
            char label[16];
            snprintf(label, sizeof(label), "slot %d", op.key);
            rc = htkv_auth_create_api_key(auth, u->id, label, r.token, &out);
            if (rc == 0) {
                memcpy(r.id, out.id, sizeof(r.id));
            }
            break;
        }
        case A_REVOKE_KEY:
            rc = htkv_auth_revoke_api_key(auth, c->m.k[op.key].id);
            break;
        case A_DELETE_USER:
            rc = htkv_auth_delete_user(auth, u->id);
            break;
        case A_AUTH_KEY: {
            struct htkv_auth_api_key out;
            rc = htkv_auth_authenticate_api_key(auth, c->m.k[op.key].token, &out);
            if (rc == 0 &&
                (strcmp(out.user_id, u->id) != 0 || strcmp(out.id, c->m.k[op.key].id) != 0)) {
                rc = HTKV_ECORRUPT; /* authenticated as someone else */
            }
            break;
        }
        default:
            _exit(4);
        }
        r.rc = rc;
        child_report(fd, &r, sizeof(r), rc, seq);
        a_apply(&c->m, seq, &op, r.id, r.token);
        child_compact(db, seq);
    }
}

static bool
a_take(void *vctx, const void *report)
{
    struct actx *c = vctx;
    struct areport r;
    memcpy(&r, report, sizeof(r));
    r.id[HTKV_AUTH_ID_LEN] = '\0';
    r.token[HTKV_AUTH_TOKEN_LEN] = '\0';
    struct aop op;
    a_gen(c->seed, c->next_seq, &c->m, &op);
    bool creates = op.kind == A_CREATE_USER || op.kind == A_CREATE_KEY;
    if (r.seq != c->next_seq || r.rc != 0 || r.kind != op.kind || r.user != op.user ||
        r.key != op.key || (creates && strlen(r.id) != HTKV_AUTH_ID_LEN) ||
        (op.kind == A_CREATE_KEY && strlen(r.token) != HTKV_AUTH_TOKEN_LEN)) {
        fprintf(stderr,
                "seed %llu: report for call %llu (rc %d, kind %d), expected call %llu "
                "(kind %d)\n",
                (unsigned long long)c->seed, (unsigned long long)r.seq, r.rc, r.kind,
                (unsigned long long)c->next_seq, op.kind);
        return false;
    }
    a_apply(&c->m, r.seq, &op, r.id, r.token);
    c->next_seq++;
    c->acked++;
    c->by_kind[op.kind]++;
    return true;
}

#define A_FAIL(...)                                                                                \
    do {                                                                                           \
        snprintf(why, cap, __VA_ARGS__);                                                           \
        return false;                                                                              \
    } while (0)

/* Does the store (through @p auth) hold exactly @p m? If not, @p why says where it differs. */
static bool
a_check(htkv_db *db, htkv_auth *auth, uint64_t seed, const struct amodel *m, char *why, size_t cap)
{
    unsigned char want[4096];
    char key[32], name[32], pw[64];
    long long plain_live = 0;
    for (int i = 0; i < NPLAIN; i++) {
        size_t kl = a_plain_key(i, key);
        if (!value_matches(db, key, kl, &m->p[i], want)) {
            A_FAIL("plain key %d: not as acknowledged (%s)", i,
                   m->p[i].present ? "present" : "absent");
        }
        plain_live += m->p[i].present;
    }
    long long n = count_prefix(db, "plain/");
    if (n != plain_live) {
        A_FAIL("%lld plain keys, %lld expected", n, plain_live);
    }
    /* Raw record counts: a batch applied in part leaves one kind out of step with another. */
    long long users = 0, keys = 0, keyed_users = 0;
    for (int u = 0; u < NUSERS; u++) {
        users += m->u[u].live;
        bool has = false;
        for (int k = 0; k < NAPIKEYS; k++) {
            has = has || (m->k[k].state == K_LIVE && m->k[k].user == u);
        }
        keyed_users += has;
    }
    for (int k = 0; k < NAPIKEYS; k++) {
        keys += m->k[k].state == K_LIVE;
    }
    static const char *prefixes[] = { "auth/user/", "auth/user_by_name/", "auth/apikey/",
                                      "auth/user_keys/" };
    const long long expect[] = { users, users, keys, keyed_users };
    for (int i = 0; i < 4; i++) {
        n = count_prefix(db, prefixes[i]);
        if (n != expect[i]) {
            A_FAIL("%lld records under %s, %lld expected", n, prefixes[i], expect[i]);
        }
    }
    for (int u = 0; u < NUSERS; u++) {
        const struct auser *s = &m->u[u];
        a_user_name(u, name);
        struct htkv_auth_user out;
        int rc = htkv_auth_get_user_by_name(auth, name, &out);
        if (s->live) {
            if (rc != 0 || strcmp(out.id, s->id) != 0) {
                A_FAIL("user %d: get_user_by_name %s, id %s, expected %s", u, htkv_strerror(rc),
                       rc == 0 ? out.id : "-", s->id);
            }
            size_t pl = a_password(seed, u, s->gen, pw);
            rc = htkv_auth_verify_password(auth, name, pw, pl, NULL);
            if (rc != 0) {
                A_FAIL("user %d: password %u: %s", u, s->gen, htkv_strerror(rc));
            }
            if (s->prev_gen != 0) {
                pl = a_password(seed, u, s->prev_gen, pw);
                rc = htkv_auth_verify_password(auth, name, pw, pl, NULL);
                if (rc != HTKV_EAUTH) {
                    A_FAIL("user %d: old password %u: %s", u, s->prev_gen, htkv_strerror(rc));
                }
            }
            struct htkv_auth_api_key *list = NULL;
            size_t count = 0;
            rc = htkv_auth_list_api_keys(auth, s->id, &list, &count);
            if (rc != 0) {
                A_FAIL("user %d: list_api_keys: %s", u, htkv_strerror(rc));
            }
            size_t mine = 0;
            bool all_known = true;
            for (int k = 0; k < NAPIKEYS; k++) {
                if (m->k[k].state != K_LIVE || m->k[k].user != u) {
                    continue;
                }
                mine++;
                bool listed = false;
                for (size_t i = 0; i < count; i++) {
                    listed = listed || strcmp(list[i].id, m->k[k].id) == 0;
                }
                all_known = all_known && listed;
            }
            htkv_auth_free(list);
            if (count != mine || !all_known) {
                A_FAIL("user %d: %zu API keys listed, %zu expected%s", u, count, mine,
                       all_known ? "" : " (one is missing)");
            }
        } else {
            if (rc != HTKV_ENOTFOUND) {
                A_FAIL("deleted user %d: get_user_by_name %s", u, htkv_strerror(rc));
            }
            if (s->dead_id[0] != '\0' &&
                (rc = htkv_auth_get_user(auth, s->dead_id, &out)) != HTKV_ENOTFOUND) {
                A_FAIL("deleted user %d: get_user(%s) %s", u, s->dead_id, htkv_strerror(rc));
            }
            if (s->dead_gen != 0) {
                size_t pl = a_password(seed, u, s->dead_gen, pw);
                rc = htkv_auth_verify_password(auth, name, pw, pl, NULL);
                if (rc != HTKV_EAUTH) {
                    A_FAIL("deleted user %d: password %u: %s", u, s->dead_gen, htkv_strerror(rc));
                }
            }
        }
    }
    for (int k = 0; k < NAPIKEYS; k++) {
        const struct akey *s = &m->k[k];
        if (s->state == K_FREE || !s->token_known) {
            continue; /* a key known by id only was checked in its user's list */
        }
        struct htkv_auth_api_key out;
        int rc = htkv_auth_authenticate_api_key(auth, s->token, &out);
        if (s->state == K_LIVE) {
            if (rc != 0 || strcmp(out.id, s->id) != 0 ||
                strcmp(out.user_id, m->u[s->user].id) != 0) {
                A_FAIL("API key %d (user %d): authenticate %s", k, s->user, htkv_strerror(rc));
            }
        } else if (rc != HTKV_EAUTH) {
            A_FAIL("revoked API key %d (user %d): authenticate %s", k, s->user, htkv_strerror(rc));
        }
    }
    return true;
}

/*
 * The model with the in-flight call @p op applied, into @p with. What a creation returned is
 * read back from the store: a created user by name, a created API key as the one id its user
 * lists beyond the acknowledged ones (its token is lost with the child).
 */
static void
a_with_inflight(htkv_auth *auth, const struct amodel *m, uint64_t seq, const struct aop *op,
                struct amodel *with)
{
    *with = *m;
    char id[HTKV_AUTH_ID_SIZE] = "";
    if (op->kind == A_CREATE_USER) {
        char name[32];
        a_user_name(op->user, name);
        struct htkv_auth_user out;
        if (htkv_auth_get_user_by_name(auth, name, &out) == 0) {
            memcpy(id, out.id, sizeof(id));
        }
    } else if (op->kind == A_CREATE_KEY) {
        struct htkv_auth_api_key *list = NULL;
        size_t count = 0;
        if (htkv_auth_list_api_keys(auth, m->u[op->user].id, &list, &count) == 0) {
            for (size_t i = 0; i < count; i++) {
                bool known = false;
                for (int k = 0; k < NAPIKEYS; k++) {
                    known =
                        known || (m->k[k].state == K_LIVE && strcmp(m->k[k].id, list[i].id) == 0);
                }
                if (!known) {
                    memcpy(id, list[i].id, sizeof(id));
                }
            }
        }
        htkv_auth_free(list);
    }
    a_apply(with, seq, op, id, NULL);
}

static void
crash_auth(int sync_mode, const char *mode)
{
    char tag[64];
    snprintf(tag, sizeof(tag), "crash_auth_%s", mode);
    struct actx *c = calloc(1, sizeof(*c));
    struct amodel *with = calloc(1, sizeof(*with));
    assert_true(c != NULL && with != NULL);
    c->seed = tu_seed(tag);
    uint64_t rng = c->seed ^ 0x5bd1e995u;
    char *dir = tu_tmpdir(tag);
    loop_config(&c->cfg, dir, sync_mode);
    c->next_seq = 1;
    struct tu_loop l = { .name = tag,
                         .seed = c->seed,
                         .report_bytes = sizeof(struct areport),
                         .child = a_child,
                         .take = a_take,
                         .ctx = c };
    htkv_auth_config acfg;
    a_auth_config(&acfg, false);
    int cycles = tu_crash_cycles(CYCLES);
    uint64_t inflight_applied = 0;
    for (int cycle = 0; cycle < cycles; cycle++) {
        uint64_t after_ms, at_sync;
        tu_cycle_kills(&rng, cycle, &after_ms, &at_sync);
        tu_kill_cycle(&l, cycle, c->next_seq, after_ms, at_sync);

        struct aop op;
        a_gen(c->seed, c->next_seq, &c->m, &op);
        tu_context("seed %llu, %s, cycle %d: reopen after call %llu", (unsigned long long)c->seed,
                   tag, cycle, (unsigned long long)c->next_seq);
        htkv_db *db = tu_open(&c->cfg);
        htkv_auth *auth = NULL;
        int rc = htkv_auth_open_with(db, &acfg, &auth);
        if (rc != 0) {
            fail_msg("seed %llu, %s, cycle %d: htkv_auth_open_with: %s",
                     (unsigned long long)c->seed, tag, cycle, htkv_strerror(rc));
        }
        char why0[256] = "", why1[256] = "";
        bool ok0 = a_check(db, auth, c->seed, &c->m, why0, sizeof(why0));
        bool ok1 = false;
        if (!ok0) {
            a_with_inflight(auth, &c->m, c->next_seq, &op, with);
            ok1 = a_check(db, auth, c->seed, with, why1, sizeof(why1));
        }
        if (!ok0 && !ok1) {
            fail_msg("seed %llu, %s, cycle %d: the store matches neither the %llu acknowledged "
                     "calls (%s) nor them plus the in-flight call %llu of kind %d (%s)",
                     (unsigned long long)c->seed, tag, cycle, (unsigned long long)c->acked, why0,
                     (unsigned long long)c->next_seq, op.kind, why1);
        }
        if (ok1) {
            c->m = *with;
            inflight_applied++;
        }
        htkv_auth_close(auth);
        assert_int_equal(htkv_close(db), 0);
        c->next_seq++; /* never reuse the in-flight sequence number */
    }
    const uint64_t *k = c->by_kind;
    fprintf(stderr,
            "[%s] %d kills, %llu acknowledged calls (%llu users created, %llu passwords changed, "
            "%llu API keys issued, %llu revoked, %llu users deleted, %llu authentications, %llu "
            "plain puts and deletes), in-flight call found applied %llu times, 0 lost\n",
            tag, cycles, (unsigned long long)c->acked, (unsigned long long)k[A_CREATE_USER],
            (unsigned long long)k[A_CHANGE_PW], (unsigned long long)k[A_CREATE_KEY],
            (unsigned long long)k[A_REVOKE_KEY], (unsigned long long)k[A_DELETE_USER],
            (unsigned long long)k[A_AUTH_KEY], (unsigned long long)(k[A_PUT] + k[A_DEL]),
            (unsigned long long)inflight_applied);
    assert_true(c->acked > 0);
    tu_rmrf(dir);
    free(dir);
    free(with);
    free(c);
}

/* Goal: in HTKV_SYNC_ALWAYS, every acknowledged auth write (user created, password changed, API
 * key issued or revoked, user deleted) survives kill -9 at a random moment or right after a
 * sync, and the in-flight one is all or nothing. Method: crash_auth (see the file comment). */
static void
test_crash_auth_sync_always(void **state)
{
    (void)state;
    crash_auth(HTKV_SYNC_ALWAYS, "always");
}

/* Goal: the same in HTKV_SYNC_INTERVAL (5 ms syncer). Method: crash_auth. */
static void
test_crash_auth_sync_interval(void **state)
{
    (void)state;
    crash_auth(HTKV_SYNC_INTERVAL, "interval");
}

/* ---- snapshots ------------------------------------------------------------------------------- */

#define SKEYS 300
#define SMAXOPS 6
#define NSLOTS 3

enum { S_PUT, S_DEL, S_BATCH, S_EXPORT, S_RESTORE };

struct sslot {
    bool valid; /* the slot's file holds exactly kv */
    struct key_state kv[SKEYS];
};

struct smodel {
    struct key_state kv[SKEYS];
    struct sslot s[NSLOTS];
};

struct sop {
    int kind;
    int slot;
    int n;
    uint16_t key[SMAXOPS];
    uint8_t del[SMAXOPS];
    uint16_t vlen[SMAXOPS];
};

struct sreport {
    uint64_t seq;
    int32_t rc;
    int32_t kind;
    int32_t slot;
    int32_t n;
};

struct sctx {
    uint64_t seed;
    htkv_config cfg;
    char *dir;
    struct smodel m;
    uint64_t next_seq;
    uint64_t acked, exports, restores;
};

static size_t
s_key(unsigned i, char *buf)
{
    int n = snprintf(buf, 64, "sk-%04u-", i);
    size_t pad = (i * 7u) % 30u;
    memset(buf + n, 'a' + (int)(i % 26), pad);
    return (size_t)n + pad;
}

static void
s_path(const char *dir, int slot, bool tmp, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/export-%d.snap%s", dir, slot, tmp ? ".tmp" : "");
}

static void
s_gen(uint64_t seed, uint64_t seq, const struct smodel *m, struct sop *op)
{
    uint64_t st = op_rng(seed, seq);
    memset(op, 0, sizeof(*op));
    op->slot = -1;
    uint64_t r = tu_rand(&st) % 100;
    int nvalid = 0;
    for (int s = 0; s < NSLOTS; s++) {
        nvalid += m->s[s].valid;
    }
    if (r >= 90 && nvalid > 0) {
        op->kind = S_RESTORE;
        int want = (int)(tu_rand(&st) % (uint64_t)nvalid);
        for (int s = 0; s < NSLOTS; s++) {
            if (m->s[s].valid && want-- == 0) {
                op->slot = s;
            }
        }
        return;
    }
    if (r >= 80) {
        op->kind = S_EXPORT;
        op->slot = (int)(tu_rand(&st) % NSLOTS);
        return;
    }
    op->kind = r < 50 ? S_PUT : r < 65 ? S_DEL : S_BATCH;
    op->n = op->kind == S_BATCH ? 2 + (int)(tu_rand(&st) % (SMAXOPS - 1)) : 1;
    for (int j = 0; j < op->n; j++) {
        op->key[j] = (uint16_t)(tu_rand(&st) % SKEYS);
        op->del[j] = op->kind == S_DEL || (op->kind == S_BATCH && tu_rand(&st) % 4 == 0);
        uint64_t v = tu_rand(&st);
        op->vlen[j] = (uint16_t)(v % 32 == 0 ? 1000 + v % 2000 : v % 150);
    }
}

static void
s_apply(struct smodel *m, uint64_t seq, const struct sop *op)
{
    switch (op->kind) {
    case S_EXPORT:
        m->s[op->slot].valid = true;
        memcpy(m->s[op->slot].kv, m->kv, sizeof(m->kv));
        return;
    case S_RESTORE:
        memcpy(m->kv, m->s[op->slot].kv, sizeof(m->kv));
        return;
    default:
        break;
    }
    for (int j = 0; j < op->n; j++) {
        struct key_state *k = &m->kv[op->key[j]];
        if (op->del[j]) {
            k->present = false;
        } else {
            *k = (struct key_state){ .present = true, .vlen = op->vlen[j], .tag = op_tag(seq, j) };
        }
    }
}

static void
s_child(void *vctx, uint64_t first_seq, int fd)
{
    struct sctx *c = vctx;
    htkv_db *db = child_open(&c->cfg);
    htkv_batch *b = NULL;
    if (htkv_batch_create(&b) != 0) {
        _exit(2);
    }
    unsigned char val[4096];
    char key[64], path[4200];
    for (uint64_t seq = first_seq;; seq++) {
        struct sop op;
        s_gen(c->seed, seq, &c->m, &op);
        int rc = 0;
        if (op.kind == S_EXPORT || op.kind == S_RESTORE) {
            s_path(c->dir, op.slot, false, path, sizeof(path));
            rc = op.kind == S_EXPORT ? htkv_snapshot_write(db, path)
                                     : htkv_snapshot_restore(db, path);
        } else if (op.kind == S_BATCH) {
            htkv_batch_clear(b);
            for (int j = 0; j < op.n && rc == 0; j++) {
                size_t kl = s_key(op.key[j], key);
                if (op.del[j]) {
                    rc = htkv_batch_delete(b, key, kl);
                } else {
                    tu_fill(val, op.vlen[j], op_tag(seq, j));
                    rc = htkv_batch_put(b, key, kl, val, op.vlen[j]);
                }
            }
            rc = rc == 0 ? htkv_write(db, b) : rc;
        } else {
            size_t kl = s_key(op.key[0], key);
            if (op.kind == S_DEL) {
                rc = htkv_delete(db, key, kl);
                rc = rc == HTKV_ENOTFOUND ? 0 : rc;
            } else {
                tu_fill(val, op.vlen[0], op_tag(seq, 0));
                rc = htkv_put(db, key, kl, val, op.vlen[0]);
            }
        }
        struct sreport r = { .seq = seq, .rc = rc, .kind = op.kind, .slot = op.slot, .n = op.n };
        child_report(fd, &r, sizeof(r), rc, seq);
        s_apply(&c->m, seq, &op);
        child_compact(db, seq);
    }
}

static bool
s_take(void *vctx, const void *report)
{
    struct sctx *c = vctx;
    struct sreport r;
    memcpy(&r, report, sizeof(r));
    struct sop op;
    s_gen(c->seed, c->next_seq, &c->m, &op);
    if (r.seq != c->next_seq || r.rc != 0 || r.kind != op.kind || r.slot != op.slot ||
        r.n != op.n) {
        fprintf(stderr,
                "seed %llu: report for call %llu (rc %d, kind %d), expected call %llu "
                "(kind %d)\n",
                (unsigned long long)c->seed, (unsigned long long)r.seq, r.rc, r.kind,
                (unsigned long long)c->next_seq, op.kind);
        return false;
    }
    s_apply(&c->m, r.seq, &op);
    c->exports += op.kind == S_EXPORT;
    c->restores += op.kind == S_RESTORE;
    c->next_seq++;
    c->acked++;
    return true;
}

/* Does @p db hold exactly @p kv (every key, and nothing else)? */
static bool
s_equals(htkv_db *db, const struct key_state *kv)
{
    unsigned char want[4096];
    char key[64];
    uint64_t live = 0;
    for (unsigned i = 0; i < SKEYS; i++) {
        size_t kl = s_key(i, key);
        if (!value_matches(db, key, kl, &kv[i], want)) {
            return false;
        }
        live += kv[i].present;
    }
    return tu_stats(db).live_keys == live;
}

static uint64_t
s_live(const struct key_state *kv)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < SKEYS; i++) {
        n += kv[i].present;
    }
    return n;
}

/* Copy file @p from to @p to: 0, or -errno (-ENOENT: no such file). */
static int
copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        return -errno;
    }
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(out >= 0);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof(buf))) > 0) {
        assert_int_equal(write(out, buf, (size_t)n), n);
    }
    assert_true(n == 0);
    close(in);
    close(out);
    return 0;
}

/* The parent's scratch store, where copies of snapshot files are restored to be checked. */
struct scratch {
    char *dir;
    char copy[4200]; /* where the file under test is copied */
    htkv_db *db;
    struct key_state kv[SKEYS]; /* what it holds */
};

/*
 * Restore a copy of @p path into the scratch store. Returns the restore's code (-ENOENT: no
 * file); on success the scratch store's contents are left for the caller to compare. A refused
 * file must leave the scratch store as it was.
 */
static int
scratch_restore(struct scratch *x, const char *path, uint64_t *count)
{
    int rc = copy_file(path, x->copy);
    if (rc != 0) {
        return rc;
    }
    uint64_t version = 0;
    *count = 0;
    int vrc = htkv_snapshot_file_version(x->copy, &version, count);
    rc = htkv_snapshot_restore(x->db, x->copy);
    assert_int_equal(vrc, rc); /* the check alone and the restore agree */
    if (rc != 0) {
        assert_true(s_equals(x->db, x->kv)); /* never partly applied */
    }
    return rc;
}

/* Check slot @p s's file after a kill. @p inflight_new: the in-flight call was an export to it
 * of @p now (the model at that moment); the file then holds the old contents or @p now. */
static void
s_check_slot(struct sctx *c, struct scratch *x, int s, const struct key_state *now,
             bool inflight_new, int cycle)
{
    char path[4200];
    s_path(c->dir, s, false, path, sizeof(path));
    struct sslot *slot = &c->m.s[s];
    uint64_t count = 0;
    int rc = scratch_restore(x, path, &count);
    if (rc == -ENOENT && !slot->valid) {
        return; /* never exported (an in-flight first export did not get to the rename) */
    }
    if (rc != 0) {
        fail_msg("seed %llu, cycle %d: snapshot slot %d (%s): restore %s (%s)",
                 (unsigned long long)c->seed, cycle, s, slot->valid ? "acknowledged" : "in flight",
                 htkv_strerror(rc), htkv_last_error());
    }
    bool is_old = slot->valid && s_equals(x->db, slot->kv) && count == s_live(slot->kv);
    bool is_new = inflight_new && s_equals(x->db, now) && count == s_live(now);
    if (!is_old && !is_new) {
        fail_msg("seed %llu, cycle %d: snapshot slot %d restores to contents that were never "
                 "exported to it",
                 (unsigned long long)c->seed, cycle, s);
    }
    const struct key_state *got = is_old ? slot->kv : now;
    memcpy(x->kv, got, sizeof(x->kv));
    if (!is_old) {
        memcpy(slot->kv, now, sizeof(slot->kv));
        slot->valid = true;
    }
}

/* A file left half-written (PATH.tmp) must be refused whole, unless it was complete (killed
 * between its fsync and the rename): then it holds @p now, and only an export was in flight. */
static int
s_check_tmp(struct sctx *c, struct scratch *x, const char *path, const struct key_state *now,
            bool may_be_whole, int cycle)
{
    uint64_t count = 0;
    int rc = scratch_restore(x, path, &count);
    if (rc == -ENOENT) {
        return 0;
    }
    if (rc == 0 && may_be_whole && s_equals(x->db, now) && count == s_live(now)) {
        memcpy(x->kv, now, sizeof(x->kv));
    } else if (rc != HTKV_ECORRUPT) {
        fail_msg("seed %llu, cycle %d: half-written %s: restore %s, not HTKV_ECORRUPT",
                 (unsigned long long)c->seed, cycle, path, htkv_strerror(rc));
    }
    assert_int_equal(unlink(path), 0);
    return 1;
}

/* Background snapshots (snapshot-NNNNNN.snap) are renamed into place whole; their .tmp are
 * either refused or whole. */
static void
s_check_background(struct sctx *c, int cycle)
{
    DIR *d = opendir(c->dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        bool snap = strncmp(de->d_name, "snapshot-", 9) == 0 && l > 5 &&
                    strcmp(de->d_name + l - 5, ".snap") == 0;
        bool tmp = strncmp(de->d_name, "snapshot-", 9) == 0 && l > 9 &&
                   strcmp(de->d_name + l - 9, ".snap.tmp") == 0;
        if (!snap && !tmp) {
            continue;
        }
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", c->dir, de->d_name);
        int rc = htkv_snapshot_file_version(path, NULL, NULL);
        if (snap ? rc != 0 : rc != 0 && rc != HTKV_ECORRUPT) {
            fail_msg("seed %llu, cycle %d: %s: %s (%s)", (unsigned long long)c->seed, cycle,
                     de->d_name, htkv_strerror(rc), htkv_last_error());
        }
    }
    closedir(d);
}

static void
crash_snapshot(int sync_mode, const char *mode)
{
    char tag[64];
    snprintf(tag, sizeof(tag), "crash_snapshot_%s", mode);
    struct sctx *c = calloc(1, sizeof(*c));
    struct key_state *with = calloc(SKEYS, sizeof(*with));
    struct scratch *x = calloc(1, sizeof(*x));
    assert_true(c != NULL && with != NULL && x != NULL);
    c->seed = tu_seed(tag);
    uint64_t rng = c->seed ^ 0x27d4eb2fu;
    c->dir = tu_tmpdir(tag);
    loop_config(&c->cfg, c->dir, sync_mode);
    c->next_seq = 1;
    x->dir = tu_tmpdir("crash_snapshot_scratch");
    snprintf(x->copy, sizeof(x->copy), "%s-copy.snap", x->dir);
    htkv_config xcfg;
    tu_config(&xcfg, x->dir, HTKV_SYNC_NEVER);
    xcfg.compaction_interval_ms = 0;
    x->db = tu_open(&xcfg);
    struct tu_loop l = { .name = tag,
                         .seed = c->seed,
                         .report_bytes = sizeof(struct sreport),
                         .child = s_child,
                         .take = s_take,
                         .ctx = c };
    int cycles = tu_crash_cycles(CYCLES);
    uint64_t inflight_applied = 0, inflight_restores = 0, restores_applied = 0, tmp_seen = 0;
    uint64_t cut_refused = 0;
    for (int cycle = 0; cycle < cycles; cycle++) {
        uint64_t after_ms, at_sync;
        tu_cycle_kills(&rng, cycle, &after_ms, &at_sync);
        tu_kill_cycle(&l, cycle, c->next_seq, after_ms, at_sync);

        struct sop op;
        s_gen(c->seed, c->next_seq, &c->m, &op);
        inflight_restores += op.kind == S_RESTORE;
        struct smodel *m = &c->m;
        memcpy(with, m->kv, sizeof(m->kv));
        if (op.kind == S_RESTORE) {
            memcpy(with, m->s[op.slot].kv, sizeof(m->kv)); /* the snapshot's contents, exactly */
        } else if (op.kind != S_EXPORT) {
            struct smodel tmpm;
            memcpy(tmpm.kv, m->kv, sizeof(m->kv));
            s_apply(&tmpm, c->next_seq, &op);
            memcpy(with, tmpm.kv, sizeof(m->kv));
        }
        tu_context("seed %llu, %s, cycle %d: reopen after call %llu", (unsigned long long)c->seed,
                   tag, cycle, (unsigned long long)c->next_seq);
        htkv_db *db = tu_open(&c->cfg);
        bool w0 = s_equals(db, m->kv);
        bool w1 = !w0 && s_equals(db, with);
        if (!w0 && !w1) {
            fail_msg("seed %llu, %s, cycle %d: the store matches neither the %llu acknowledged "
                     "calls nor them plus the in-flight call %llu (kind %d, slot %d)",
                     (unsigned long long)c->seed, tag, cycle, (unsigned long long)c->acked,
                     (unsigned long long)c->next_seq, op.kind, op.slot);
        }
        /* Files: every slot, the in-flight export's half-written file, background snapshots. */
        for (int s = 0; s < NSLOTS; s++) {
            bool inflight_export = op.kind == S_EXPORT && op.slot == s;
            s_check_slot(c, x, s, m->kv, inflight_export, cycle);
            char tmp[4200];
            s_path(c->dir, s, true, tmp, sizeof(tmp));
            tmp_seen += (uint64_t)s_check_tmp(c, x, tmp, m->kv, inflight_export, cycle);
        }
        s_check_background(c, cycle);
        /* A copy of a slot cut short, as a kill inside the write would leave it: refused. */
        for (int s = (int)(tu_rand(&rng) % NSLOTS), i = 0; i < NSLOTS; i++, s = (s + 1) % NSLOTS) {
            if (!m->s[s].valid) {
                continue;
            }
            char path[4200], cut[4300];
            s_path(c->dir, s, false, path, sizeof(path));
            snprintf(cut, sizeof(cut), "%s-cut.snap", x->dir);
            assert_int_equal(copy_file(path, cut), 0);
            long long size = tu_file_size(cut);
            assert_true(size > 0);
            assert_int_equal(tu_truncate(cut, (long long)(tu_rand(&rng) % (uint64_t)size)), 0);
            uint64_t count = 0;
            int rc = scratch_restore(x, cut, &count);
            if (rc != HTKV_ECORRUPT) {
                fail_msg("seed %llu, cycle %d: slot %d cut short: restore %s, not HTKV_ECORRUPT",
                         (unsigned long long)c->seed, cycle, s, htkv_strerror(rc));
            }
            unlink(cut);
            cut_refused++;
            break;
        }
        if (w1) {
            memcpy(m->kv, with, sizeof(m->kv));
            inflight_applied++;
            restores_applied += op.kind == S_RESTORE;
        }
        assert_int_equal(htkv_close(db), 0);
        c->next_seq++; /* never reuse the in-flight sequence number */
    }
    fprintf(stderr,
            "[%s] %d kills, %llu acknowledged calls (%llu exports, %llu restores), in-flight "
            "call found applied %llu times (restores: %llu in flight, %llu applied), %llu "
            "half-written files seen, %llu cut copies refused, 0 lost\n",
            tag, cycles, (unsigned long long)c->acked, (unsigned long long)c->exports,
            (unsigned long long)c->restores, (unsigned long long)inflight_applied,
            (unsigned long long)inflight_restores, (unsigned long long)restores_applied,
            (unsigned long long)tmp_seen, (unsigned long long)cut_refused);
    assert_true(c->acked > 0);
    assert_int_equal(htkv_close(x->db), 0);
    unlink(x->copy);
    tu_rmrf(x->dir);
    free(x->dir);
    tu_rmrf(c->dir);
    free(c->dir);
    free(x);
    free(with);
    free(c);
}

/* Goal: in HTKV_SYNC_ALWAYS, kill -9 during writes, snapshot exports and restores (at random
 * moments and right after a sync) never loses an acknowledged call, never shows a partial
 * restore, and never leaves an acknowledged snapshot file that does not restore exactly.
 * Method: crash_snapshot (see the file comment). */
static void
test_crash_snapshot_sync_always(void **state)
{
    (void)state;
    crash_snapshot(HTKV_SYNC_ALWAYS, "always");
}

/* Goal: the same in HTKV_SYNC_NEVER. Method: crash_snapshot. */
static void
test_crash_snapshot_sync_never(void **state)
{
    (void)state;
    crash_snapshot(HTKV_SYNC_NEVER, "never");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_auth_sync_always),
        cmocka_unit_test(test_crash_auth_sync_interval),
        cmocka_unit_test(test_crash_snapshot_sync_always),
        cmocka_unit_test(test_crash_snapshot_sync_never),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
