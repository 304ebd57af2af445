/*
 * test_rec.c - the record codec: what htkv_rec_encode writes, htkv_rec_check accepts, and
 * nothing else; and the check never reads outside the bytes it is given.
 */
#include "tests/support/testutil.h"

#include <sys/mman.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "engine/rec.h"

#define VAL_MAX (1u << 20)

/* A record description for the table-driven tests. */
struct spec {
    uint8_t type;
    uint8_t flags;
    uint64_t version;
    uint32_t key_len;
    uint32_t val_len;
};

/* Encode @p sp into a fresh buffer with deterministic key and value bytes; returns the buffer
 * (htkv_rec_size bytes) and the key/value it used. */
static unsigned char *
rec_build(const struct spec *sp, uint64_t seg_id, uint64_t off, unsigned char **key,
          unsigned char **val)
{
    uint64_t size = htkv_rec_size(sp->key_len, sp->val_len);
    unsigned char *buf = malloc(size);
    *key = malloc(sp->key_len + 1);
    *val = malloc(sp->val_len + 1);
    assert_non_null(buf);
    assert_non_null(*key);
    assert_non_null(*val);
    memset(buf, 0xA5, size); /* encode must overwrite every byte, padding included */
    tu_fill(*key, sp->key_len, sp->version * 7 + 1);
    tu_fill(*val, sp->val_len, sp->version * 7 + 2);
    uint64_t w = htkv_rec_encode(buf, seg_id, off, sp->type, sp->flags, sp->version, *key,
                                 sp->key_len, *val, sp->val_len);
    assert_int_equal(w, size);
    return buf;
}

/* Recompute the CRC of a (possibly hand-edited) record so that only its shape is wrong. */
static void
rec_reseal(unsigned char *p, uint64_t seg_id, uint64_t off)
{
    unsigned char pos[16];
    uint32_t klen, vlen;
    memcpy(pos, &seg_id, 8);
    memcpy(pos + 8, &off, 8);
    memcpy(&klen, p + 4, 4);
    memcpy(&vlen, p + 8, 4);
    uint32_t c = htkv_crc32c(0, pos, sizeof(pos));
    c = htkv_crc32c(c, p + 4, REC_HDR_BYTES - 4 + (size_t)klen + vlen);
    memcpy(p, &c, 4);
}

static const struct spec specs[] = {
    { REC_SET, 0, 1, 1, 0 },                    /* smallest SET, empty value */
    { REC_SET, 0, 2, 5, 3 },                    /* raw 32: no padding */
    { REC_SET, 0, 3, 10, 51 },                  /* raw 85: 3 padding bytes */
    { REC_SET, REC_F_BATCH, 77, 16, 100 },      /* inside a batch */
    { REC_SET, 0, REC_VERSION_MAX, 300, 4000 }, /* largest version, larger lengths */
    { REC_DEL, 0, 9, 7, 0 },                    /* tombstone */
    { REC_DEL, REC_F_BATCH, 10, 64, 0 },        /* tombstone inside a batch */
    { REC_BATCH_BEGIN, 0, 11, 0, REC_BEGIN_PAYLOAD },
    { REC_BATCH_COMMIT, 0, 11, 0, REC_COMMIT_PAYLOAD },
    { REC_SEAL, 0, 1, 0, REC_SEAL_PAYLOAD },
};
#define NSPECS (sizeof(specs) / sizeof(specs[0]))

/* Goal: check accepts exactly what encode wrote, with the same fields, at the same position.
 * Method: encode every kind of record at several positions; check; compare the decoded header,
 * the key and value bytes, and the zero padding. */
static void
test_rec_encode_check_round_trip(void **state)
{
    (void)state;
    const uint64_t segs[] = { 1, 2, 0xFFFFFFFFull, 0x123456789ABCull };
    const uint64_t offs[] = { 64, 72, 4096, 0xFFFFFF00ull };
    for (size_t i = 0; i < NSPECS; i++) {
        for (size_t k = 0; k < 4; k++) {
            unsigned char *key, *val;
            unsigned char *buf = rec_build(&specs[i], segs[k], offs[k], &key, &val);
            uint64_t raw = REC_HDR_BYTES + (uint64_t)specs[i].key_len + specs[i].val_len;
            uint64_t size = htkv_rec_size(specs[i].key_len, specs[i].val_len);
            assert_int_equal(size % REC_ALIGN, 0);
            assert_true(size >= raw && size < raw + REC_ALIGN);
            struct rec_hdr h;
            assert_int_equal(htkv_rec_check(buf, size, segs[k], offs[k], VAL_MAX, &h), 0);
            assert_int_equal(htkv_rec_check(buf, raw, segs[k], offs[k], VAL_MAX, &h), 0);
            assert_int_equal(h.type, specs[i].type);
            assert_int_equal(h.flags, specs[i].flags);
            assert_int_equal(h.reserved, 0);
            assert_true(h.version == specs[i].version);
            assert_int_equal(h.key_len, specs[i].key_len);
            assert_int_equal(h.val_len, specs[i].val_len);
            if (specs[i].key_len > 0) {
                assert_memory_equal(buf + REC_HDR_BYTES, key, specs[i].key_len);
            }
            if (specs[i].val_len > 0) {
                assert_memory_equal(buf + REC_HDR_BYTES + specs[i].key_len, val, specs[i].val_len);
            }
            for (uint64_t b = raw; b < size; b++) {
                assert_int_equal(buf[b], 0);
            }
            struct rec_hdr d;
            htkv_rec_hdr_decode(buf, &d);
            assert_memory_equal(&d, &h, sizeof(d));
            assert_int_equal(htkv_rec_verify_crc(buf, segs[k], offs[k], &d), 0);
            free(buf);
            free(key);
            free(val);
        }
    }
}

/* Goal: any single flipped bit of a record's checked bytes (header, key, value) is rejected.
 * Method: for every record kind, flip each bit of the first raw bytes in turn and check with
 * the full padded length available. */
static void
test_rec_every_single_bit_flip_is_rejected(void **state)
{
    (void)state;
    for (size_t i = 0; i < NSPECS; i++) {
        unsigned char *key, *val;
        unsigned char *buf = rec_build(&specs[i], 5, 128, &key, &val);
        uint64_t raw = REC_HDR_BYTES + (uint64_t)specs[i].key_len + specs[i].val_len;
        uint64_t size = htkv_rec_size(specs[i].key_len, specs[i].val_len);
        struct rec_hdr h;
        for (uint64_t bit = 0; bit < raw * 8; bit++) {
            buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
            int rc = htkv_rec_check(buf, size, 5, 128, VAL_MAX, &h);
            if (rc != HTKV_ECORRUPT) {
                fprintf(stderr, "spec %zu: flip of bit %llu (byte %llu) accepted\n", i,
                        (unsigned long long)bit, (unsigned long long)(bit / 8));
            }
            assert_int_equal(rc, HTKV_ECORRUPT);
            buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        }
        assert_int_equal(htkv_rec_check(buf, size, 5, 128, VAL_MAX, &h), 0);
        free(buf);
        free(key);
        free(val);
    }
}

/* Goal: a record read at another place than where it was written fails its check.
 * Method: check each record at other offsets and other segment ids (near and far). */
static void
test_rec_check_at_other_offset_or_segment_is_rejected(void **state)
{
    (void)state;
    for (size_t i = 0; i < NSPECS; i++) {
        unsigned char *key, *val;
        const uint64_t seg = 42, off = 8192;
        unsigned char *buf = rec_build(&specs[i], seg, off, &key, &val);
        uint64_t size = htkv_rec_size(specs[i].key_len, specs[i].val_len);
        struct rec_hdr h;
        assert_int_equal(htkv_rec_check(buf, size, seg, off, VAL_MAX, &h), 0);
        const uint64_t other_offs[] = { off - 8, off + 8, off + 4096, 64, off ^ (1ull << 40) };
        for (size_t k = 0; k < sizeof(other_offs) / sizeof(other_offs[0]); k++) {
            assert_int_equal(htkv_rec_check(buf, size, seg, other_offs[k], VAL_MAX, &h),
                             HTKV_ECORRUPT);
        }
        const uint64_t other_segs[] = { seg - 1, seg + 1, seg ^ (1ull << 63), 0 };
        for (size_t k = 0; k < sizeof(other_segs) / sizeof(other_segs[0]); k++) {
            assert_int_equal(htkv_rec_check(buf, size, other_segs[k], off, VAL_MAX, &h),
                             HTKV_ECORRUPT);
        }
        free(buf);
        free(key);
        free(val);
    }
}

/* Goal: a record cut short is rejected, and one whose checked bytes are all there is accepted.
 * Method: check with every avail from 0 to the padded size. */
static void
test_rec_truncated_avail_is_rejected(void **state)
{
    (void)state;
    for (size_t i = 0; i < NSPECS; i++) {
        unsigned char *key, *val;
        unsigned char *buf = rec_build(&specs[i], 3, 64, &key, &val);
        uint64_t raw = REC_HDR_BYTES + (uint64_t)specs[i].key_len + specs[i].val_len;
        uint64_t size = htkv_rec_size(specs[i].key_len, specs[i].val_len);
        struct rec_hdr h;
        for (uint64_t avail = 0; avail <= size; avail++) {
            int rc = htkv_rec_check(buf, avail, 3, 64, VAL_MAX, &h);
            assert_int_equal(rc, avail < raw ? HTKV_ECORRUPT : 0);
        }
        free(buf);
        free(key);
        free(val);
    }
}

/* Goal: the shape rules hold even when the CRC matches (a bug or an attacker could write a
 * well-checksummed bad record). Method: edit one header field, recompute the CRC, check. */
static void
test_rec_bad_shape_with_good_crc_is_rejected(void **state)
{
    (void)state;
    struct spec set = { REC_SET, 0, 5, 8, 16 };
    unsigned char *key, *val;
    unsigned char *orig = rec_build(&set, 9, 256, &key, &val);
    uint64_t size = htkv_rec_size(set.key_len, set.val_len);
    unsigned char *buf = malloc(size);
    assert_non_null(buf);
    struct rec_hdr h;

    /* The value limit is enforced: exactly val_max passes, one less fails. */
    assert_int_equal(htkv_rec_check(orig, size, 9, 256, 16, &h), 0);
    assert_int_equal(htkv_rec_check(orig, size, 9, 256, 15, &h), HTKV_ECORRUPT);

    struct edit {
        size_t at;
        size_t len;
        uint64_t v;
    } edits[] = {
        { 16, 8, 0 },                   /* version 0 */
        { 16, 8, REC_VERSION_MAX + 1 }, /* version past the limit */
        { 16, 8, UINT64_MAX },          /* version that would wrap the counter */
        { 14, 2, 1 },                   /* reserved != 0 */
        { 13, 1, 0x02 },                /* unknown flag */
        { 13, 1, 0x80 },                /* unknown flag */
        { 12, 1, 0 },                   /* type 0 */
        { 12, 1, 6 },                   /* type past SEAL */
        { 12, 1, 0xFF },                /* type garbage */
        { 12, 1, REC_DEL },             /* DEL with a value */
        { 12, 1, REC_BATCH_BEGIN },     /* control record with a key */
        { 12, 1, REC_SEAL },            /* control record with a key */
    };
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        memcpy(buf, orig, size);
        memcpy(buf + edits[i].at, &edits[i].v, edits[i].len);
        rec_reseal(buf, 9, 256);
        assert_int_equal(htkv_rec_check(buf, size, 9, 256, VAL_MAX, &h), HTKV_ECORRUPT);
    }
    free(orig);
    free(buf);
    free(key);
    free(val);

    /* Empty key on a SET/DEL, a key on a control record, control payloads of the wrong size. */
    const struct {
        uint8_t type;
        uint32_t klen, vlen;
    } bad[] = {
        { REC_SET, 0, 0 },           { REC_DEL, 0, 0 },  { REC_BATCH_BEGIN, 1, 16 },
        { REC_BATCH_COMMIT, 0, 16 }, { REC_SEAL, 0, 8 }, { REC_BATCH_BEGIN, 0, 8 },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint32_t klen = bad[i].klen, vlen = bad[i].vlen;
        unsigned char *b = calloc(1, htkv_rec_size(klen, vlen));
        assert_non_null(b);
        b[12] = bad[i].type;
        memcpy(b + 4, &klen, 4);
        memcpy(b + 8, &vlen, 4);
        uint64_t ver = 1;
        memcpy(b + 16, &ver, 8);
        rec_reseal(b, 1, 64);
        assert_int_equal(htkv_rec_check(b, htkv_rec_size(klen, vlen), 1, 64, VAL_MAX, &h),
                         HTKV_ECORRUPT);
        free(b);
    }

    /* A key of HTKV_KEY_MAX is fine, one byte more is not. */
    for (uint32_t klen = HTKV_KEY_MAX; klen <= HTKV_KEY_MAX + 1; klen++) {
        uint64_t sz = htkv_rec_size(klen, 0);
        unsigned char *b = calloc(1, sz);
        assert_non_null(b);
        b[12] = REC_SET;
        memcpy(b + 4, &klen, 4);
        uint64_t ver = 3;
        memcpy(b + 16, &ver, 8);
        memset(b + REC_HDR_BYTES, 'k', klen);
        rec_reseal(b, 1, 64);
        assert_int_equal(htkv_rec_check(b, sz, 1, 64, VAL_MAX, &h),
                         klen <= HTKV_KEY_MAX ? 0 : HTKV_ECORRUPT);
        free(b);
    }
}

/* A readable region that ends exactly where a PROT_NONE page begins. */
struct guarded {
    unsigned char *base;
    size_t page;
    size_t bytes; /* readable bytes before the guard */
};

static void
guarded_map(struct guarded *g, size_t readable)
{
    g->page = (size_t)sysconf(_SC_PAGESIZE);
    g->bytes = (readable + g->page - 1) / g->page * g->page;
    g->base =
        mmap(NULL, g->bytes + g->page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g->base != MAP_FAILED);
    assert_int_equal(mprotect(g->base + g->bytes, g->page, PROT_NONE), 0);
}

/* Copy @p n bytes of @p src so that they end at the guard page; returns where they start. */
static unsigned char *
guarded_place(struct guarded *g, const void *src, size_t n)
{
    assert_true(n <= g->bytes);
    unsigned char *p = g->base + g->bytes - n;
    memcpy(p, src, n);
    return p;
}

static void
guarded_unmap(struct guarded *g)
{
    munmap(g->base, g->bytes + g->page);
}

/* Goal: htkv_rec_check never reads past avail, whatever the bytes claim. Method: place each
 * truncation of real records, hand-made headers claiming huge lengths, and seeded random
 * garbage so that they end exactly at a PROT_NONE guard page, and check with avail = the bytes
 * placed (a read past them faults and fails the test). */
static void
test_rec_check_never_reads_past_avail(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_rec_check_never_reads_past_avail");
    uint64_t rng = seed;
    struct guarded g;
    guarded_map(&g, 16384);
    struct rec_hdr h;

    /* Every truncation of every record kind. */
    for (size_t i = 0; i < NSPECS; i++) {
        unsigned char *key, *val;
        unsigned char *buf = rec_build(&specs[i], 4, 64, &key, &val);
        uint64_t raw = REC_HDR_BYTES + (uint64_t)specs[i].key_len + specs[i].val_len;
        for (uint64_t avail = 0; avail <= raw; avail++) {
            unsigned char *p = guarded_place(&g, buf, avail);
            assert_int_equal(htkv_rec_check(p, avail, 4, 64, VAL_MAX, &h),
                             avail < raw ? HTKV_ECORRUPT : 0);
        }
        free(buf);
        free(key);
        free(val);
    }

    /* Headers that claim more than is there. */
    const uint32_t lens[][2] = {
        { 0xFFFFFFFFu, 0xFFFFFFFFu }, { HTKV_KEY_MAX, 0 }, { 1, VAL_MAX }, { 100, 100 },
        { 0xFFFFFFF0u, 0x20u },       { 8, 0xFFFFFFE8u }
    };
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        for (int type = 0; type <= 6; type++) {
            unsigned char hdr[REC_HDR_BYTES + 40] = { 0 };
            memcpy(hdr + 4, &lens[i][0], 4);
            memcpy(hdr + 8, &lens[i][1], 4);
            hdr[12] = (unsigned char)type;
            uint64_t ver = 1;
            memcpy(hdr + 16, &ver, 8);
            for (size_t avail = REC_HDR_BYTES; avail <= sizeof(hdr); avail += 8) {
                unsigned char *p = guarded_place(&g, hdr, avail);
                assert_int_equal(htkv_rec_check(p, avail, 1, 64, VAL_MAX, &h), HTKV_ECORRUPT);
            }
        }
    }

    /* Seeded garbage of random lengths, with plausible headers now and then. */
    unsigned char junk[4096];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = (size_t)(tu_rand(&rng) % sizeof(junk));
        for (size_t k = 0; k < n; k++) {
            junk[k] = (unsigned char)tu_rand(&rng);
        }
        if (n >= REC_HDR_BYTES && tu_rand(&rng) % 2 == 0) {
            uint32_t kl = (uint32_t)(tu_rand(&rng) % 4096), vl = (uint32_t)(tu_rand(&rng) % 8192);
            memcpy(junk + 4, &kl, 4);
            memcpy(junk + 8, &vl, 4);
            junk[12] = (unsigned char)(1 + tu_rand(&rng) % 5);
            junk[13] = 0;
            junk[14] = junk[15] = 0;
        }
        unsigned char *p = guarded_place(&g, junk, n);
        int rc = htkv_rec_check(p, n, 1, 64, VAL_MAX, &h);
        if (rc != HTKV_ECORRUPT) {
            fprintf(stderr, "seed %llu: iteration %d: garbage of %zu bytes accepted\n",
                    (unsigned long long)seed, iter, n);
        }
        assert_int_equal(rc, HTKV_ECORRUPT);
    }
    guarded_unmap(&g);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rec_encode_check_round_trip),
        cmocka_unit_test(test_rec_every_single_bit_flip_is_rejected),
        cmocka_unit_test(test_rec_check_at_other_offset_or_segment_is_rejected),
        cmocka_unit_test(test_rec_truncated_avail_is_rejected),
        cmocka_unit_test(test_rec_bad_shape_with_good_crc_is_rejected),
        cmocka_unit_test(test_rec_check_never_reads_past_avail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
