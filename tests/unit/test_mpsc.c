/*
 * test_mpsc.c - the bounded multi-producer single-consumer queue (engine/mpsc.h): an empty queue
 * pops nothing, a full one refuses the push, items come out in push order, and with many
 * producers every item comes out once, in each producer's order.
 */
#include "tests/support/testutil.h"

#include <pthread.h>
#include <sched.h>

#include "engine/mpsc.h"

/* Items are non-NULL pointers made of (producer, sequence). */
#define ITEM(p, i) ((void *)(uintptr_t)(((uint64_t)(p) << 32) | ((uint64_t)(i) + 1)))
#define ITEM_PRODUCER(x) ((unsigned)((uint64_t)(uintptr_t)(x) >> 32))
#define ITEM_SEQ(x) ((uint32_t)((uint64_t)(uintptr_t)(x)&0xFFFFFFFFu) - 1)

static void
test_mpsc_empty_queue(void **state)
{
    (void)state;
    struct mpsc q;
    assert_int_equal(htkv_mpsc_init(&q, 4), 0);
    assert_true(htkv_mpsc_empty(&q));
    assert_null(htkv_mpsc_pop(&q));
    assert_int_equal(htkv_mpsc_depth(&q), 0);
    /* Emptied again after use. */
    assert_true(htkv_mpsc_push(&q, ITEM(0, 0)));
    assert_false(htkv_mpsc_empty(&q));
    assert_ptr_equal(htkv_mpsc_pop(&q), ITEM(0, 0));
    assert_true(htkv_mpsc_empty(&q));
    assert_null(htkv_mpsc_pop(&q));
    htkv_mpsc_fini(&q);
    assert_null(q.cells);
}

static void
test_mpsc_fifo_and_full(void **state)
{
    (void)state;
    struct mpsc q;
    assert_int_equal(htkv_mpsc_init(&q, 8), 0);
    /* Several laps of the ring, so that positions wrap over the cells. */
    uint32_t next_in = 0, next_out = 0;
    for (int lap = 0; lap < 5; lap++) {
        while (htkv_mpsc_push(&q, ITEM(1, next_in))) {
            next_in++;
            assert_true(htkv_mpsc_depth(&q) <= 8);
        }
        assert_int_equal(htkv_mpsc_depth(&q), 8); /* full: the push was refused */
        assert_false(htkv_mpsc_push(&q, ITEM(1, next_in)));
        /* Take out a few (lap + 1), in order; the queue takes as many again. */
        for (int i = 0; i <= lap; i++) {
            void *x = htkv_mpsc_pop(&q);
            assert_non_null(x);
            assert_int_equal(ITEM_SEQ(x), next_out);
            next_out++;
        }
        assert_int_equal(htkv_mpsc_depth(&q), 8 - (lap + 1));
    }
    void *x;
    while ((x = htkv_mpsc_pop(&q)) != NULL) {
        assert_int_equal(ITEM_SEQ(x), next_out);
        next_out++;
    }
    assert_int_equal(next_out, next_in);
    assert_true(htkv_mpsc_empty(&q));
    htkv_mpsc_fini(&q);
}

#define PRODUCERS 4
#define PER_PRODUCER 50000u

struct producer {
    struct mpsc *q;
    unsigned id;
    uint64_t refused; /* pushes refused by a full queue (retried) */
};

static void *
produce(void *arg)
{
    struct producer *p = arg;
    for (uint32_t i = 0; i < PER_PRODUCER; i++) {
        while (!htkv_mpsc_push(p->q, ITEM(p->id, i))) {
            p->refused++;
            sched_yield();
        }
    }
    return NULL;
}

static void
test_mpsc_many_producers_keep_their_order(void **state)
{
    (void)state;
    struct mpsc q;
    assert_int_equal(htkv_mpsc_init(&q, 64), 0);
    pthread_t t[PRODUCERS];
    struct producer p[PRODUCERS];
    for (unsigned i = 0; i < PRODUCERS; i++) {
        p[i] = (struct producer){ .q = &q, .id = i };
        assert_int_equal(pthread_create(&t[i], NULL, produce, &p[i]), 0);
    }
    uint32_t next[PRODUCERS] = { 0 };
    uint64_t total = 0;
    while (total < (uint64_t)PRODUCERS * PER_PRODUCER) {
        void *x = htkv_mpsc_pop(&q);
        if (x == NULL) {
            sched_yield();
            continue;
        }
        unsigned who = ITEM_PRODUCER(x);
        assert_true(who < PRODUCERS);
        assert_int_equal(ITEM_SEQ(x), next[who]); /* each producer's items in its order */
        next[who]++;
        total++;
    }
    for (unsigned i = 0; i < PRODUCERS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(next[i], PER_PRODUCER);
    }
    assert_null(htkv_mpsc_pop(&q)); /* nothing twice */
    assert_int_equal(htkv_mpsc_depth(&q), 0);
    htkv_mpsc_fini(&q);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mpsc_empty_queue),
        cmocka_unit_test(test_mpsc_fifo_and_full),
        cmocka_unit_test(test_mpsc_many_producers_keep_their_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
