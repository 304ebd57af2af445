/*
 * test_cluster_entry.c - the raft entry codec of htkv_cluster (cluster/entry.c).
 *
 * Goal: what is encoded decodes to the same ops; the decoder never reads outside its buffer
 * and refuses malformed bytes (run under ASan, a read past the end fails the test). Method: a
 * round trip of a hand-made entry; then every truncation of it and seeded random mutations and
 * garbage, each decoded to the end.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/entry.h"
#include "tests/support/testutil.h"

static const struct htkv_cluster_op ops[3] = {
    { .type = HTKV_CLUSTER_OP_CHECK, .key = "a", .key_len = 1, .version = 0x0102030405060708u },
    { .type = HTKV_CLUSTER_OP_PUT, .key = "bb", .key_len = 2, .val = "value", .val_len = 5 },
    { .type = HTKV_CLUSTER_OP_DELETE, .key = "ccc", .key_len = 3 },
};

/* An entry of two requests: the three ops as a batch, then the delete alone. */
static unsigned char *
make_entry(size_t *len)
{
    size_t r1 = htkv_entry_req_size(ops, 3), r2 = htkv_entry_req_size(&ops[2], 1);
    *len = ENTRY_HDR_BYTES + r1 + r2;
    unsigned char *buf = calloc(1, ENTRY_PAD(*len));
    assert_non_null(buf);
    htkv_entry_hdr_encode(buf, 2);
    htkv_entry_req_encode(buf + ENTRY_HDR_BYTES, ENTRY_BATCH, ops, 3);
    htkv_entry_req_encode(buf + ENTRY_HDR_BYTES + r1, ENTRY_DELETE_ONE, &ops[2], 1);
    return buf;
}

/* Where decode_all() leaves what it read: a store the compiler must keep. */
static volatile unsigned char entry_sink;

/* Decode all of @p buf; returns 0 when every request and op decoded. */
static int
decode_all(const unsigned char *buf, size_t len)
{
    struct entry_reader r;
    uint32_t count = 0;
    int rc = htkv_entry_open(&r, buf, len, &count);
    for (uint32_t i = 0; i < count && rc == 0; i++) {
        int kind = 0;
        uint32_t nops = 0;
        rc = htkv_entry_next_req(&r, &kind, &nops);
        for (uint32_t j = 0; j < nops && rc == 0; j++) {
            struct htkv_cluster_op op;
            rc = htkv_entry_next_op(&r, &op);
            if (rc == 0) {
                /* Touch every byte the op points at: ASan catches a view past the end. */
                unsigned char sum = 0;
                for (size_t k = 0; k < op.key_len; k++) {
                    sum ^= ((const unsigned char *)op.key)[k];
                }
                for (size_t k = 0; k < op.val_len; k++) {
                    sum ^= ((const unsigned char *)op.val)[k];
                }
                entry_sink ^= sum;
            }
        }
    }
    return rc;
}

/* Goal: encoded ops decode to the same ops, padding ignored. */
static void
test_cluster_entry_round_trip(void **state)
{
    (void)state;
    size_t len = 0;
    unsigned char *buf = make_entry(&len);
    struct entry_reader r;
    uint32_t count = 0;
    assert_int_equal(htkv_entry_open(&r, buf, ENTRY_PAD(len), &count), 0);
    assert_int_equal(count, 2);
    int kind = 0;
    uint32_t nops = 0;
    assert_int_equal(htkv_entry_next_req(&r, &kind, &nops), 0);
    assert_int_equal(kind, ENTRY_BATCH);
    assert_int_equal(nops, 3);
    for (int i = 0; i < 3; i++) {
        struct htkv_cluster_op op;
        assert_int_equal(htkv_entry_next_op(&r, &op), 0);
        assert_int_equal(op.type, ops[i].type);
        assert_int_equal(op.key_len, ops[i].key_len);
        assert_memory_equal(op.key, ops[i].key, op.key_len);
        assert_int_equal(op.val_len, ops[i].val_len);
        if (op.val_len > 0) {
            assert_memory_equal(op.val, ops[i].val, op.val_len);
        }
        assert_int_equal(op.version, ops[i].version);
    }
    assert_int_equal(htkv_entry_next_req(&r, &kind, &nops), 0);
    assert_int_equal(kind, ENTRY_DELETE_ONE);
    assert_int_equal(nops, 1);
    free(buf);
}

/* Goal: every truncation, mutation and garbage buffer is refused or decoded in bounds. */
static void
test_cluster_entry_malformed_stays_in_bounds(void **state)
{
    (void)state;
    uint64_t rng = tu_seed("cluster_entry_malformed");
    size_t len = 0;
    unsigned char *good = make_entry(&len);
    assert_int_equal(decode_all(good, len), 0);
    for (size_t cut = 0; cut < len; cut++) {
        unsigned char *b = malloc(cut > 0 ? cut : 1);
        memcpy(b, good, cut);
        assert_int_equal(decode_all(b, cut), -EINVAL);
        free(b);
    }
    for (int round = 0; round < 20000; round++) {
        size_t n = round % 2 ? len : (size_t)(tu_rand(&rng) % 96);
        unsigned char *b = malloc(n > 0 ? n : 1);
        if (round % 2) {
            memcpy(b, good, n);
            for (int k = 0; k < 3; k++) {
                b[tu_rand(&rng) % n] = (unsigned char)tu_rand(&rng);
            }
        } else {
            for (size_t k = 0; k < n; k++) {
                b[k] = (unsigned char)tu_rand(&rng);
            }
        }
        int rc = decode_all(b, n);
        assert_true(rc == 0 || rc == -EINVAL || rc == HTKV_ETOOBIG);
        free(b);
    }
    free(good);
}

/* Goal: bad ops are refused before anything is encoded. */
static void
test_cluster_entry_ops_check_refuses_bad_ops(void **state)
{
    (void)state;
    struct htkv_cluster_op op = { .type = HTKV_CLUSTER_OP_PUT, .key = "k", .key_len = 1 };
    assert_int_equal(htkv_entry_ops_check(&op, 1, 10), 0);
    assert_int_equal(htkv_entry_ops_check(NULL, 1, 10), -EINVAL);
    assert_int_equal(htkv_entry_ops_check(&op, 0, 10), -EINVAL);
    op.val_len = 11;
    op.val = "01234567890";
    assert_int_equal(htkv_entry_ops_check(&op, 1, 10), HTKV_ETOOBIG);
    op.val_len = 1;
    op.version = 3;
    assert_int_equal(htkv_entry_ops_check(&op, 1, 10), -EINVAL);
    op = (struct htkv_cluster_op){
        .type = HTKV_CLUSTER_OP_DELETE, .key = "k", .key_len = 1, .val_len = 1, .val = "x"
    };
    assert_int_equal(htkv_entry_ops_check(&op, 1, 10), -EINVAL);
    op = (struct htkv_cluster_op){ .type = HTKV_CLUSTER_OP_CHECK, .key = "k", .key_len = 0 };
    assert_int_equal(htkv_entry_ops_check(&op, 1, 10), -EINVAL);
    op.key_len = HTKV_KEY_MAX + 1;
    assert_int_equal(htkv_entry_ops_check(&op, 1, 10), HTKV_ETOOBIG);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cluster_entry_round_trip),
        cmocka_unit_test(test_cluster_entry_malformed_stays_in_bounds),
        cmocka_unit_test(test_cluster_entry_ops_check_refuses_bad_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
