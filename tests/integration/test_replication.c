/*
 * test_replication.c - deterministic commands: stores fed one command log agree byte for byte
 * whatever their worker or shard counts; stale commands change nothing; the change feed misses
 * nothing and repeats nothing, across reopens; snapshot install then log replay equals the
 * leader.
 */
#include <errno.h>

#include <htkv/replication.h>

#include "tests/support/testutil.h"

#define NKEYS 300
#define LOG_LEN 1500

/* One log entry: 1..4 commands sharing a version. Stored flat: cmd[i] with its own buffers. */
struct logbuf {
    htkv_command cmd[LOG_LEN * 4];
    char keys[LOG_LEN * 4][24];
    unsigned char vals[LOG_LEN * 4][200];
    size_t n;
    uint64_t last_version;
};

/* A seeded log: entries with strictly increasing versions (gaps allowed), sets and deletes,
 * some entries with several commands (batches across shards). */
static void
log_make(struct logbuf *l, uint64_t seed)
{
    l->n = 0;
    uint64_t v = 0;
    for (int e = 0; e < LOG_LEN; e++) {
        uint64_t r = tu_rand(&seed);
        v += 1 + r % 3;
        int k = (r >> 8) % 5 == 0 ? 1 + (int)((r >> 16) % 4) : 1;
        for (int j = 0; j < k; j++) {
            uint64_t q = tu_rand(&seed);
            size_t i = l->n++;
            htkv_command *c = &l->cmd[i];
            int kl = snprintf(l->keys[i], sizeof(l->keys[i]), "rk-%04u", (unsigned)(q % NKEYS));
            size_t vl = (q >> 20) % 200;
            tu_fill(l->vals[i], vl, q);
            bool del = (q >> 40) % 4 == 0;
            *c = (htkv_command){ .type = del ? HTKV_CMD_DELETE : HTKV_CMD_SET,
                                 .key = l->keys[i],
                                 .key_len = (size_t)kl,
                                 .val = del ? NULL : l->vals[i],
                                 .val_len = del ? 0 : vl,
                                 .version = v };
        }
    }
    l->last_version = v;
}

static htkv_db *
open_replica(const char *tag, char **dir, unsigned workers, unsigned shards)
{
    *dir = tu_tmpdir(tag);
    htkv_config cfg;
    tu_config(&cfg, *dir, HTKV_SYNC_NEVER);
    cfg.worker_threads = workers;
    cfg.shard_count = shards;
    cfg.max_segment_bytes = 64u << 10;
    cfg.compaction_interval_ms = 0;
    return tu_open(&cfg);
}

static unsigned char *
snapshot_bytes(htkv_db *db, const char *dir, long long *len)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/cmp.snap", dir);
    assert_int_equal(htkv_snapshot_write(db, path), 0);
    *len = tu_file_size(path);
    unsigned char *p = malloc((size_t)*len);
    assert_non_null(p);
    assert_int_equal(tu_read_at(path, 0, p, (size_t)*len), 0);
    return p;
}

static void
assert_same_snapshot(htkv_db *a, const char *da, htkv_db *b, const char *db_)
{
    long long la, lb;
    unsigned char *x = snapshot_bytes(a, da, &la), *y = snapshot_bytes(b, db_, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(x, y, (size_t)la);
    free(x);
    free(y);
}

/* Submit the log in chunks of entries (never splitting an entry). */
static void
submit_all(htkv_db *db, const struct logbuf *l, size_t from, size_t to, int *outcomes)
{
    while (from < to) {
        size_t end = from + 37 < to ? from + 37 : to;
        while (end < to && l->cmd[end].version == l->cmd[end - 1].version) {
            end++;
        }
        int rc = htkv_submit(db, &l->cmd[from], end - from, outcomes ? outcomes + from : NULL);
        if (rc < 0) {
            fprintf(stderr, "submit [%zu, %zu): %s %s\n", from, end, htkv_strerror(rc),
                    htkv_last_error());
        }
        assert_true(rc >= 0);
        from = end;
    }
}

/* Goal: three replicas (inline, 2 workers, other shard counts) fed one log agree on every
 * outcome and write identical snapshots; their latest version is the log's. */
static void
test_replication_same_log_same_bytes(void **state)
{
    (void)state;
    static struct logbuf l;
    log_make(&l, tu_seed("repl-same"));
    char *da, *db_, *dc;
    htkv_db *a = open_replica("repl-a", &da, 0, 4);
    htkv_db *b = open_replica("repl-b", &db_, 2, 7);
    htkv_db *c = open_replica("repl-c", &dc, 1, 1);
    static int oa[LOG_LEN * 4], ob[LOG_LEN * 4], oc[LOG_LEN * 4];
    submit_all(a, &l, 0, l.n, oa);
    submit_all(b, &l, 0, l.n, ob);
    submit_all(c, &l, 0, l.n, oc);
    assert_memory_equal(oa, ob, l.n * sizeof(int));
    assert_memory_equal(oa, oc, l.n * sizeof(int));
    uint64_t va, vb;
    assert_int_equal(htkv_latest_version(a, &va), 0);
    assert_int_equal(htkv_latest_version(b, &vb), 0);
    uint64_t last_applied = 0; /* an entry whose commands are all stale uses no version */
    for (size_t i = 0; i < l.n; i++) {
        last_applied = oa[i] == HTKV_APPLIED ? l.cmd[i].version : last_applied;
    }
    assert_int_equal(va, last_applied);
    assert_int_equal(vb, last_applied);
    assert_same_snapshot(a, da, b, db_);
    assert_same_snapshot(a, da, c, dc);
    /* Compaction on one replica only changes nothing that is seen. */
    assert_int_equal(htkv_compact_now(b), 0);
    assert_same_snapshot(a, da, b, db_);
    assert_int_equal(htkv_close(a), 0);
    assert_int_equal(htkv_close(b), 0);
    assert_int_equal(htkv_close(c), 0);
    tu_rmrf(da);
    tu_rmrf(db_);
    tu_rmrf(dc);
    free(da);
    free(db_);
    free(dc);
}

/* Goal: replaying any part of the log again reports every command stale and changes nothing;
 * a command not above the latest version that is not stale is refused with -ERANGE; bad
 * commands are refused with -EINVAL and change nothing. */
static void
test_replication_stale_and_bad_commands(void **state)
{
    (void)state;
    static struct logbuf l;
    log_make(&l, tu_seed("repl-stale"));
    char *da, *db_;
    htkv_db *a = open_replica("repl-s-a", &da, 0, 4);
    htkv_db *b = open_replica("repl-s-b", &db_, 0, 4);
    submit_all(a, &l, 0, l.n, NULL);
    submit_all(b, &l, 0, l.n, NULL);
    static int out[LOG_LEN * 4];
    assert_int_equal(htkv_submit(a, l.cmd, l.n, out), 0);
    for (size_t i = 0; i < l.n; i++) {
        assert_int_equal(out[i], HTKV_STALE);
    }
    assert_same_snapshot(a, da, b, db_);
    /* A key the log never touched, at an old version: stale all the same (the log is past
     * that position; the verdict never depends on what the key holds). */
    htkv_command c = {
        .type = HTKV_CMD_SET, .key = "fresh", .key_len = 5, .val = "x", .val_len = 1, .version = 5
    };
    assert_int_equal(htkv_submit(a, &c, 1, out), 0);
    assert_int_equal(out[0], HTKV_STALE);
    tu_expect(a, "fresh", 5, NULL, 0);
    c.version = (UINT64_C(1) << 62) + 1; /* above the largest version */
    assert_int_equal(htkv_submit(a, &c, 1, out), -ERANGE);
    c.version = l.last_version + 10;
    assert_int_equal(htkv_submit(a, &c, 1, out), 1);
    assert_int_equal(out[0], HTKV_APPLIED);
    tu_expect(a, "fresh", 5, "x", 1);
    /* Bad commands. */
    htkv_command bad[2] = { c, c };
    bad[0].version = l.last_version + 20;
    bad[1].version = l.last_version + 19; /* decreasing */
    assert_int_equal(htkv_submit(a, bad, 2, out), -EINVAL);
    bad[1] = c;
    bad[1].type = 9;
    assert_int_equal(htkv_submit(a, bad, 2, out), -EINVAL);
    bad[1] = c;
    bad[1].version = 0;
    assert_int_equal(htkv_submit(a, &bad[1], 1, out), -EINVAL);
    bad[1] = c;
    bad[1].type = HTKV_CMD_DELETE; /* a delete with a value */
    assert_int_equal(htkv_submit(a, &bad[1], 1, out), -EINVAL);
    assert_int_equal(htkv_submit(NULL, &c, 1, out), -EINVAL);
    assert_int_equal(htkv_submit(a, NULL, 1, out), -EINVAL);
    assert_int_equal(htkv_submit(a, NULL, 0, out), 0);
    uint64_t v;
    assert_int_equal(htkv_latest_version(a, &v), 0);
    assert_int_equal(v, l.last_version + 10); /* the last applied command */
    assert_int_equal(htkv_latest_version(NULL, &v), -EINVAL);
    assert_int_equal(htkv_close(a), 0);
    assert_int_equal(htkv_close(b), 0);
    tu_rmrf(da);
    tu_rmrf(db_);
    free(da);
    free(db_);
}

/* Goal: a follower fed only by the leader's change feed, in rounds across leader reopens,
 * equals the leader: the feed misses nothing and repeats nothing (counts checked). */
static void
test_replication_change_feed_catches_up(void **state)
{
    (void)state;
    static struct logbuf l;
    log_make(&l, tu_seed("repl-feed"));
    char *dl, *df;
    htkv_db *leader = open_replica("repl-l", &dl, 0, 4);
    htkv_db *follower = open_replica("repl-f", &df, 2, 3);
    size_t rounds[] = { 0, l.n / 5, l.n / 2, l.n };
    for (int r = 1; r < 3; r++) {
        while (l.cmd[rounds[r]].version == l.cmd[rounds[r] - 1].version) {
            rounds[r]++; /* rounds end between log entries */
        }
    }
    htkv_config cfg;
    tu_config(&cfg, dl, HTKV_SYNC_NEVER);
    cfg.shard_count = 4;
    cfg.max_segment_bytes = 64u << 10;
    cfg.compaction_interval_ms = 0;
    size_t fed = 0, applied = 0;
    static int out[LOG_LEN * 4];
    for (int r = 1; r < 4; r++) {
        submit_all(leader, &l, rounds[r - 1], rounds[r], out);
        if (r == 2) {
            assert_int_equal(htkv_close(leader), 0); /* the feed survives a reopen */
            leader = tu_open(&cfg);
        }
        uint64_t since;
        assert_int_equal(htkv_latest_version(follower, &since), 0);
        htkv_changes *ch;
        assert_int_equal(htkv_changes_since(leader, since, &ch), 0);
        /* Every command the leader applied after `since`, no more, no less. */
        size_t expect = 0;
        for (size_t i = 0; i < rounds[r]; i++) {
            expect += l.cmd[i].version > since && out[i] == HTKV_APPLIED;
        }
        applied += expect;
        assert_int_equal(htkv_changes_count(ch), expect);
        htkv_command batch[64];
        size_t nb = 0;
        htkv_command cmd;
        int rc;
        uint64_t prev = since;
        while ((rc = htkv_changes_next(ch, &cmd)) == 1) {
            assert_true(cmd.version > since && cmd.version >= prev);
            prev = cmd.version;
            /* Submit between versions only: a batch (one version) must stay whole. */
            if (nb >= 48 && cmd.version != batch[nb - 1].version) {
                assert_true(htkv_submit(follower, batch, nb, NULL) >= 0);
                nb = 0;
            }
            assert_true(nb < 64);
            batch[nb++] = cmd;
            fed++;
        }
        assert_int_equal(rc, 0);
        if (nb > 0) {
            assert_true(htkv_submit(follower, batch, nb, NULL) >= 0);
        }
        htkv_changes_destroy(ch);
        assert_same_snapshot(leader, dl, follower, df);
    }
    assert_int_equal(fed, applied);
    assert_true(applied > l.n / 2);
    /* After a compaction the old history is gone: a clear error; recent history still works. */
    assert_int_equal(htkv_compact_now(leader), 0);
    htkv_changes *ch;
    assert_int_equal(htkv_changes_since(leader, 0, &ch), HTKV_ECOMPACTED);
    assert_null(ch);
    uint64_t latest;
    assert_int_equal(htkv_latest_version(leader, &latest), 0);
    assert_int_equal(htkv_changes_since(leader, latest, &ch), 0);
    assert_int_equal(htkv_changes_count(ch), 0);
    htkv_changes_destroy(ch);
    assert_int_equal(htkv_close(leader), 0);
    assert_int_equal(htkv_close(follower), 0);
    tu_rmrf(dl);
    tu_rmrf(df);
    free(dl);
    free(df);
}

/* Goal: a follower that installs the leader's snapshot taken mid-log, then replays the log from
 * somewhat before the snapshot's version, equals the leader (the overlap comes back stale). */
static void
test_replication_snapshot_install_then_replay(void **state)
{
    (void)state;
    static struct logbuf l;
    log_make(&l, tu_seed("repl-snap"));
    char *dl, *df;
    htkv_db *leader = open_replica("repl-sl", &dl, 0, 4);
    htkv_db *follower = open_replica("repl-sf", &df, 0, 2);
    size_t mid = l.n / 2;
    while (mid < l.n && l.cmd[mid].version == l.cmd[mid - 1].version) {
        mid++;
    }
    submit_all(leader, &l, 0, mid, NULL);
    char snap[4200];
    snprintf(snap, sizeof(snap), "%s/leader.snap", dl);
    assert_int_equal(htkv_snapshot_write(leader, snap), 0);
    uint64_t at_snap, file_version = 0, keys = 0;
    assert_int_equal(htkv_latest_version(leader, &at_snap), 0);
    assert_int_equal(htkv_snapshot_file_version(snap, &file_version, &keys), 0);
    assert_int_equal(file_version, at_snap);
    assert_int_equal(keys, tu_stats(leader).live_keys);
    assert_int_equal(htkv_snapshot_file_version("/nonexistent.snap", NULL, NULL), -ENOENT);
    submit_all(leader, &l, mid, l.n, NULL);
    assert_int_equal(htkv_snapshot_restore(follower, snap), 0);
    uint64_t v;
    assert_int_equal(htkv_latest_version(follower, &v), 0);
    assert_int_equal(v, at_snap);
    /* Replay from well before the snapshot: the overlap is stale. */
    size_t from = mid / 2;
    while (from > 0 && l.cmd[from].version == l.cmd[from - 1].version) {
        from--;
    }
    static int out[LOG_LEN * 4];
    submit_all(follower, &l, from, l.n, out);
    size_t stale = 0;
    for (size_t i = from; i < mid; i++) {
        stale += out[i] == HTKV_STALE;
    }
    assert_int_equal(stale, mid - from);
    assert_same_snapshot(leader, dl, follower, df);
    assert_int_equal(htkv_close(leader), 0);
    assert_int_equal(htkv_close(follower), 0);
    tu_rmrf(dl);
    tu_rmrf(df);
    free(dl);
    free(df);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replication_same_log_same_bytes),
        cmocka_unit_test(test_replication_stale_and_bad_commands),
        cmocka_unit_test(test_replication_change_feed_catches_up),
        cmocka_unit_test(test_replication_snapshot_install_then_replay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
