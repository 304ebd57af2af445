/*
 * fault_powerloss.c - power-loss simulation: after a power cut, a store holds only what it
 * fdatasynced, and only the names whose directory it fsynced.
 *
 * Method. The engine's sync hook (uring/ur_fault.h) runs after every fdatasync/fsync that a
 * durability promise rests on, on the thread that synced: the caller in inline mode, the worker
 * in worker mode (after the fdatasync's completion on either I/O backend), the caller of a
 * compaction. It runs before any write that the sync covers is acknowledged. For a file, the
 * test keeps a copy of its bytes as they are at that moment, by inode: that is what the disk
 * holds. For a directory, it keeps the directory's listing (name -> inode): those names survive.
 * A simulated power cut builds a new store from the last listings, each name filled with its
 * inode's last synced bytes (empty when never synced), and, to tear the last sector, optionally
 * some garbage after the copied bytes of each shard's newest segment. Recovery must then keep
 * every write acknowledged in HTKV_SYNC_ALWAYS and return nothing that was never written.
 *
 * The execution mode is the suite's (HTKV_TEST_WORKERS, HTKV_TEST_IO_BACKEND): inline, or
 * workers on io_uring or on plain system calls.
 *
 * Hooks on several threads. Hook calls, and the cut, are serialised by one mutex. The cut is a
 * flag set under it: hooks that come later record nothing, and the image is built from what was
 * recorded before. A write acknowledged before the cut was covered by a hook call that finished
 * before its acknowledgement, hence before the cut, so its bytes and names are in the image.
 * Two hook calls for one file may run in either order: the file only grows, so the later copy
 * holds everything the earlier one did, whichever sync it was made for.
 *
 * Bytes written after the sync. The hook runs a little after its sync returned, and other threads
 * (another worker staging a batch that reaches this shard, a compaction, inline writers sharing
 * the next group sync) may append to the same file meanwhile. A copy can therefore hold bytes
 * that were never synced. They are kept: a disk may hold any writes that reached it after the
 * last sync, and a prefix of them (whole records in order, possibly one cut short at the end) is
 * one of the states it can be left in. Such bytes are records of writes that were issued, so they
 * can only make recovery return a value of a write that was in flight at the cut or acknowledged
 * after it, never a value that was not written; the models below accept exactly those. What a
 * copy must not be is a state the file was never in: a single read that races with an appender
 * can miss an earlier record (or part of it) yet see a later one, which recovery rightly reports
 * as damage. Every byte of these files is written at most once (records are appended into zeroed
 * or new space; manifests and other files are appended to or written whole), so a copy is read
 * until two reads agree: the file was then in that state at the moment between the two reads.
 * The torn variant still applies: its garbage follows whatever the copy holds, synced or not.
 *
 * Two workloads. One writer: each operation returns before the next starts, so at the cut every
 * operation issued was acknowledged and the image must equal the model exactly. Several writers
 * with disjoint keys, cut while they run: each key must hold its value as of the last
 * operation acknowledged before the cut, or the value of one of its writer's later operations
 * (in flight or acknowledged after the cut), and a batch found in the image must be found whole.
 * Segments are small so rotations, seals and manifest edits happen; a compaction runs halfway.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <htkv/replication.h>

#include "tests/support/testutil.h"
#include "uring/ur_fault.h"

#define NKEYS 150
#define MAXFILES 512
/* Reads of a file that may still change before the hook gives up (the writers it waits for are
 * blocked on this very sync, so two reads agree within a few tries). */
#define COPY_TRIES 100000

/* What "the disk" holds. */
struct pl_inode {
    ino_t ino;
    char copy[4200]; /* shadow file with its synced bytes */
};
struct pl_entry {
    char dir[4200]; /* path of the directory */
    char name[256];
    ino_t ino;
    bool is_dir;
};

static char pl_shadow[3000]; /* directory of the shadow copies */

/* Serialises the hook calls and the cut. */
static pthread_mutex_t pl_lock = PTHREAD_MUTEX_INITIALIZER;

static struct {
    struct pl_inode inodes[MAXFILES];
    size_t ninodes;
    struct pl_entry entries[MAXFILES];
    size_t nentries;
    unsigned copies;
    unsigned rereads;     /* copies that changed while being read */
    unsigned hook_errors; /* a copy or listing that could not be made */
    bool cut;             /* the power is off: later syncs are not recorded */
} pl;

static struct pl_inode *
pl_inode(ino_t ino)
{
    for (size_t i = 0; i < pl.ninodes; i++) {
        if (pl.inodes[i].ino == ino) {
            return &pl.inodes[i];
        }
    }
    if (pl.ninodes == MAXFILES) {
        return NULL;
    }
    struct pl_inode *n = &pl.inodes[pl.ninodes++];
    n->ino = ino;
    snprintf(n->copy, sizeof(n->copy), "%s/ino-%llu", pl_shadow, (unsigned long long)ino);
    return n;
}

/* Every byte of @p fd into a malloc'ed *@p buf (*@p len bytes). False on a read error. */
static bool
read_all(int fd, unsigned char **buf, size_t *len)
{
    size_t cap = 65536, n = 0;
    unsigned char *b = malloc(cap);
    while (b != NULL) {
        if (n == cap) {
            unsigned char *g = realloc(b, cap * 2);
            if (g == NULL) {
                break;
            }
            b = g;
            cap *= 2;
        }
        ssize_t r = pread(fd, b + n, cap - n, (off_t)n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            if (r == 0) {
                *buf = b;
                *len = n;
                return true;
            }
            break;
        }
        n += (size_t)r;
    }
    free(b);
    return false;
}

/* Copy the current bytes of @p wfd (which may be open for writing only) into @p path: read
 * until two reads agree (see the file header). */
static bool
copy_fd(int wfd, const char *path)
{
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", wfd);
    int fd = open(link, O_RDONLY | O_CLOEXEC); /* the same inode, readable */
    if (fd < 0) {
        return false;
    }
    unsigned char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    bool ok = read_all(fd, &a, &alen);
    bool stable = false;
    for (int i = 0; ok && !stable && i < COPY_TRIES; i++) {
        ok = read_all(fd, &b, &blen);
        stable = ok && alen == blen && memcmp(a, b, alen) == 0;
        pl.rereads += ok && !stable;
        free(a);
        a = b;
        alen = blen;
        b = NULL;
    }
    close(fd);
    int out = stable ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
    ok = out >= 0 && write(out, a, alen) == (ssize_t)alen;
    if (out >= 0) {
        close(out);
    }
    free(a);
    pl.copies += ok;
    return ok;
}

/* A directory's listing replaces what was recorded for it. */
static bool
record_dir(int fd)
{
    char link[64], dir[4200];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, dir, sizeof(dir) - 1);
    if (n <= 0) {
        return false;
    }
    dir[n] = '\0';
    size_t k = 0;
    for (size_t i = 0; i < pl.nentries; i++) {
        if (strcmp(pl.entries[i].dir, dir) != 0) {
            pl.entries[k++] = pl.entries[i];
        }
    }
    pl.nentries = k;
    DIR *d = opendir(dir);
    if (d == NULL) {
        return false;
    }
    struct dirent *de;
    bool ok = true;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        if (pl.nentries == MAXFILES) {
            ok = false;
            break;
        }
        struct pl_entry *e = &pl.entries[pl.nentries++];
        snprintf(e->dir, sizeof(e->dir), "%s", dir);
        snprintf(e->name, sizeof(e->name), "%s", de->d_name);
        e->ino = de->d_ino;
        e->is_dir = de->d_type == DT_DIR;
    }
    closedir(d);
    return ok;
}

/* The sync hook: any thread, under pl_lock. */
static void
sync_hook(int fd)
{
    pthread_mutex_lock(&pl_lock);
    struct stat st;
    bool ok = true;
    if (pl.cut) {
        /* after the power cut: nothing reaches the disk any more */
    } else if (fstat(fd, &st) != 0) {
        ok = false;
    } else if (S_ISDIR(st.st_mode)) {
        ok = record_dir(fd);
    } else {
        struct pl_inode *n = pl_inode(st.st_ino);
        ok = n != NULL && copy_fd(fd, n->copy);
    }
    pl.hook_errors += !ok;
    pthread_mutex_unlock(&pl_lock);
}

/* Cut the power: from now on the hook records nothing. */
static void
pl_cut(void)
{
    pthread_mutex_lock(&pl_lock);
    pl.cut = true;
    pthread_mutex_unlock(&pl_lock);
}

static void
copy_path(const char *from, const char *to, long long extra_garbage)
{
    int in = open(from, O_RDONLY);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(out >= 0);
    unsigned char buf[65536];
    ssize_t n;
    while (in >= 0 && (n = read(in, buf, sizeof(buf))) > 0) {
        assert_int_equal(write(out, buf, (size_t)n), n);
    }
    if (extra_garbage > 0) {
        memset(buf, 0xA5, sizeof(buf));
        assert_int_equal(write(out, buf, (size_t)extra_garbage), extra_garbage);
    }
    if (in >= 0) {
        close(in);
    }
    close(out);
}

/* Is @p e the newest segment of its directory (the only one appended to after its sync)? */
static bool
is_last_segment(const struct pl_entry *e)
{
    size_t l = strlen(e->name);
    if (l <= 4 || strcmp(e->name + l - 4, ".seg") != 0) {
        return false;
    }
    for (size_t i = 0; i < pl.nentries; i++) {
        const struct pl_entry *o = &pl.entries[i];
        size_t ol = strlen(o->name);
        if (strcmp(o->dir, e->dir) == 0 && ol == l && strcmp(o->name + ol - 4, ".seg") == 0 &&
            strcmp(o->name, e->name) > 0) {
            return false; /* same width, zero-padded ids: a later name is a newer segment */
        }
    }
    return true;
}

/* Build the store a power cut leaves at @p image: durable names of @p root and its shard
 * directories, each with its inode's synced bytes. With @p tear, 4 KiB of garbage follows the
 * copied bytes of every shard's newest segment (a sector written but torn). Call after
 * pl_cut(). */
static void
pl_build_image(const char *root, const char *image, bool tear)
{
    assert_int_equal(mkdir(image, 0755), 0);
    for (int pass = 0; pass < 2; pass++) { /* directories first, then files */
        for (size_t i = 0; i < pl.nentries; i++) {
            const struct pl_entry *e = &pl.entries[i];
            size_t rl = strlen(root);
            if (strncmp(e->dir, root, rl) != 0) {
                continue;
            }
            char to[8600];
            snprintf(to, sizeof(to), "%s%s/%s", image, e->dir + rl, e->name);
            if (pass == 0 && e->is_dir) {
                assert_int_equal(mkdir(to, 0755), 0);
            } else if (pass == 1 && !e->is_dir) {
                const struct pl_inode *n = NULL;
                for (size_t k = 0; k < pl.ninodes; k++) {
                    n = pl.inodes[k].ino == e->ino ? &pl.inodes[k] : n;
                }
                copy_path(n != NULL ? n->copy : "/nonexistent", to,
                          tear && is_last_segment(e) ? 4096 : 0);
            }
        }
    }
}

static size_t
key_of(unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "pl-%04u", i);
}

/* One run's store: DIR/store, its image DIR/image, the shadow copies in DIR/shadow. */
struct pl_run {
    char *dir;
    char store[4200], image[4200];
    htkv_config cfg;
    uint64_t handed_out; /* htkv_latest_version() of the store just before the cut */
};

static void
pl_run_start(struct pl_run *r)
{
    r->dir = tu_tmpdir("powerloss");
    memset(&pl, 0, sizeof(pl));
    snprintf(pl_shadow, sizeof(pl_shadow), "%s/shadow", r->dir);
    assert_int_equal(mkdir(pl_shadow, 0755), 0);
    snprintf(r->store, sizeof(r->store), "%s/store", r->dir);
    snprintf(r->image, sizeof(r->image), "%s/image", r->dir);
    tu_config(&r->cfg, r->store, HTKV_SYNC_ALWAYS); /* the suite's execution mode */
    r->cfg.max_segment_bytes = 64u << 10;
    r->cfg.compaction_interval_ms = 0;
    r->cfg.hint_files = 0;
}

/* Cut the power, build the image, close the store and open the image. */
static htkv_db *
pl_run_cut(struct pl_run *r, htkv_db *db, bool tear, const char *what)
{
    assert_int_equal(htkv_latest_version(db, &r->handed_out), 0);
    pl_cut();
    pl_build_image(r->store, r->image, tear);
    (void)htkv_close(db);
    htkv_fault_sync_hook = NULL; /* the store's threads are gone */
    assert_int_equal(pl.hook_errors, 0);
    assert_true(pl.copies > 0);
    htkv_config ic = r->cfg;
    ic.data_dir = r->image;
    htkv_db *img = NULL;
    int rc = htkv_open(&ic, &img);
    if (rc != 0) {
        fprintf(stderr, "%s%s: open %s (%s)\n", what, tear ? ", torn" : "", htkv_strerror(rc),
                htkv_last_error());
    }
    assert_int_equal(rc, 0);
    return img;
}

/*
 * Versions never repeat, also across power loss: the image's next write gets a version above
 * every version the store had handed out before the cut, acknowledged or not (the manifest's
 * reservation was durable before any of them was used). A probe key outside the test's keys.
 */
static void
pl_check_versions(const struct pl_run *r, htkv_db *img)
{
    uint64_t v = 0;
    size_t n = 0;
    assert_int_equal(htkv_put(img, "pl-probe", 8, "p", 1), 0);
    assert_int_equal(htkv_get_version(img, "pl-probe", 8, NULL, 0, &n, &v), HTKV_ETOOSMALL);
    if (v <= r->handed_out) {
        fprintf(stderr, "version %llu after the power cut, not above %llu handed out before it\n",
                (unsigned long long)v, (unsigned long long)r->handed_out);
    }
    assert_true(v > r->handed_out);
    assert_int_equal(htkv_delete(img, "pl-probe", 8), 0);
}

static void
pl_run_end(struct pl_run *r, htkv_db *img)
{
    pl_check_versions(r, img);
    assert_int_equal(htkv_close(img), 0);
    tu_rmrf(r->dir);
    free(r->dir);
}

static const char *
mode_name(const htkv_config *cfg)
{
    if (cfg->worker_threads == 0) {
        return "inline";
    }
    return cfg->io_backend == HTKV_IO_URING  ? "workers, io_uring"
           : cfg->io_backend == HTKV_IO_SYNC ? "workers, sync"
                                             : "workers, auto";
}

/* Goal: see the file header. Method: for several cut points k (and torn or not), a fresh store
 * in HTKV_SYNC_ALWAYS takes k seeded operations from one thread (puts, deletes, batches across
 * shards, a compaction halfway), then the power is cut: the image must open and hold exactly
 * the model of the k acknowledged operations. */
static void
test_fault_power_loss_keeps_acknowledged_writes(void **state)
{
    (void)state;
    static const int cuts[] = { 1, 7, 60, 333, 700 };
    for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
        for (int tear = 0; tear < 2; tear++) {
            uint64_t seed = tu_seed("powerloss") + (uint64_t)c;
            struct pl_run run;
            pl_run_start(&run);
            if (run.cfg.worker_threads > 0) {
                tu_assert_hook_reset(); /* an engine assertion on a worker aborts */
            }
            htkv_fault_sync_hook = sync_hook;
            htkv_db *db = tu_open(&run.cfg);
            static uint64_t tag[NKEYS];
            static uint32_t len[NKEYS];
            memset(tag, 0, sizeof(tag));
            unsigned char val[400];
            char key[32];
            htkv_batch *b;
            assert_int_equal(htkv_batch_create(&b), 0);
            for (int op = 0; op < cuts[c]; op++) {
                uint64_t r = tu_rand(&seed);
                unsigned i = (unsigned)(r % NKEYS);
                uint32_t l = (uint32_t)(1 + (r >> 16) % 300);
                uint64_t t = ((uint64_t)op << 8) | 1;
                if ((r >> 40) % 6 == 0) {
                    htkv_batch_clear(b);
                    for (unsigned k = 0; k < 4; k++) {
                        unsigned j = (i + k * 37u) % NKEYS;
                        tu_fill(val, l, t + k);
                        assert_int_equal(htkv_batch_put(b, key, key_of(j, key), val, l), 0);
                    }
                    assert_int_equal(htkv_write(db, b), 0);
                    for (unsigned k = 0; k < 4; k++) {
                        tag[(i + k * 37u) % NKEYS] = t + k;
                        len[(i + k * 37u) % NKEYS] = l;
                    }
                } else if ((r >> 40) % 6 == 1 && tag[i] != 0) {
                    assert_int_equal(htkv_delete(db, key, key_of(i, key)), 0);
                    tag[i] = 0;
                } else {
                    tu_fill(val, l, t);
                    assert_int_equal(htkv_put(db, key, key_of(i, key), val, l), 0);
                    tag[i] = t;
                    len[i] = l;
                }
                if (op == cuts[c] / 2 && op > 0) {
                    assert_int_equal(htkv_compact_now(db), 0);
                }
            }
            htkv_batch_destroy(b);
            /* Power cut now: build what the disk holds, before anything else is synced. */
            char what[96];
            snprintf(what, sizeof(what), "%s: cut after %d ops", mode_name(&run.cfg), cuts[c]);
            htkv_db *img = pl_run_cut(&run, db, tear != 0, what);
            unsigned present = 0;
            for (unsigned i = 0; i < NKEYS; i++) {
                size_t kl = key_of(i, key);
                if (tag[i] == 0) {
                    tu_expect(img, key, kl, NULL, 0);
                } else {
                    tu_fill(val, len[i], tag[i]);
                    tu_expect(img, key, kl, val, len[i]);
                    present++;
                }
            }
            fprintf(stderr, "[powerloss] %s%s: %u keys checked (%u with a value), %u copies\n",
                    what, tear ? ", torn" : "", NKEYS, present, pl.copies);
            pl_run_end(&run, img);
        }
    }
}

/* ---- several writers ---------------------------------------------------------------------- */

#define CW_WRITERS 3
#define CW_KEYS 40     /* keys per writer: writer w owns keys w * CW_KEYS + [0, CW_KEYS) */
#define CW_MAXOPS 4000 /* operations per writer at most */
#define CW_BATCH 3     /* keys per batch */

/* CW_CHECKED_PUT: a batch of a condition on another key of the writer (which holds: no one
 * else writes it), then the put. With workers it runs on the worker of the condition's shard,
 * which need not own the put's: two workers may then have syncs of one shard in flight. */
enum { CW_PUT = 1, CW_DEL = 2, CW_BATCH_PUT = 3, CW_CHECKED_PUT = 4 };

/* One operation of a writer, recorded before it is issued. */
struct cw_op {
    uint8_t kind;
    uint8_t n;              /* keys: 1, or CW_BATCH */
    uint16_t key[CW_BATCH]; /* indices into the writer's keys */
    uint32_t len;           /* value length (puts) */
};

struct cw_writer {
    htkv_db *db;
    unsigned id;
    uint64_t seed;
    struct cw_op ops[CW_MAXOPS];
    _Atomic unsigned issued; /* ops[0, issued) are recorded */
    _Atomic unsigned acked;  /* ops[0, acked) returned 0 */
    pthread_t thread;
};

static _Atomic int cw_stop;
static _Atomic int cw_errors;

static uint64_t
cw_tag(unsigned w, unsigned op, unsigned k)
{
    return ((uint64_t)(w + 1) << 48) | ((uint64_t)op << 8) | (k + 1);
}

static size_t
cw_key(unsigned w, unsigned k, char *buf)
{
    return key_of(w * CW_KEYS + k, buf);
}

static void *
cw_main(void *arg)
{
    struct cw_writer *wr = arg;
    bool present[CW_KEYS] = { false };
    unsigned char val[400];
    char key[32];
    htkv_batch *b = NULL;
    if (htkv_batch_create(&b) != 0) {
        atomic_fetch_add(&cw_errors, 1);
        return NULL;
    }
    for (unsigned op = 0; op < CW_MAXOPS && !atomic_load(&cw_stop); op++) {
        uint64_t r = tu_rand(&wr->seed);
        struct cw_op *o = &wr->ops[op];
        o->key[0] = (uint16_t)(r % CW_KEYS);
        o->len = (uint32_t)(1 + (r >> 16) % 300);
        o->n = 1;
        if ((r >> 40) % 6 == 0) {
            o->kind = CW_BATCH_PUT;
            o->n = CW_BATCH;
            for (unsigned k = 1; k < CW_BATCH; k++) {
                o->key[k] = (uint16_t)((o->key[0] + k * 13u) % CW_KEYS);
            }
        } else if ((r >> 40) % 6 == 1 && present[o->key[0]]) {
            o->kind = CW_DEL;
        } else if ((r >> 40) % 6 == 2) {
            o->kind = CW_CHECKED_PUT;
        } else {
            o->kind = CW_PUT;
        }
        atomic_store(&wr->issued, op + 1);
        int rc;
        if (o->kind == CW_BATCH_PUT) {
            htkv_batch_clear(b);
            rc = 0;
            for (unsigned k = 0; k < o->n && rc == 0; k++) {
                tu_fill(val, o->len, cw_tag(wr->id, op, k));
                rc = htkv_batch_put(b, key, cw_key(wr->id, o->key[k], key), val, o->len);
            }
            rc = rc != 0 ? rc : htkv_write(wr->db, b);
        } else if (o->kind == CW_CHECKED_PUT) {
            size_t kl = cw_key(wr->id, (o->key[0] + 7u) % CW_KEYS, key), vl;
            uint64_t v = 0;
            rc = htkv_get_version(wr->db, key, kl, NULL, 0, &vl, &v);
            htkv_batch_clear(b);
            if (rc == HTKV_ETOOSMALL || rc == HTKV_ENOTFOUND) {
                rc = htkv_batch_check(b, key, kl, v);
            }
            tu_fill(val, o->len, cw_tag(wr->id, op, 0));
            rc = rc != 0 ? rc : htkv_batch_put(b, key, cw_key(wr->id, o->key[0], key), val, o->len);
            rc = rc != 0 ? rc : htkv_write(wr->db, b);
        } else if (o->kind == CW_DEL) {
            rc = htkv_delete(wr->db, key, cw_key(wr->id, o->key[0], key));
        } else {
            tu_fill(val, o->len, cw_tag(wr->id, op, 0));
            rc = htkv_put(wr->db, key, cw_key(wr->id, o->key[0], key), val, o->len);
        }
        if (rc != 0) {
            fprintf(stderr, "writer %u, op %u: %s\n", wr->id, op, htkv_strerror(rc));
            atomic_fetch_add(&cw_errors, 1);
            break;
        }
        for (unsigned k = 0; k < o->n; k++) {
            present[o->key[k]] = o->kind != CW_DEL;
        }
        atomic_store(&wr->acked, op + 1);
    }
    htkv_batch_destroy(b);
    return NULL;
}

/* Operation of @p wr that wrote its key @p k last among ops[0, upto), or -1 (never written). */
static int
cw_last_write(const struct cw_writer *wr, unsigned k, unsigned upto)
{
    for (unsigned op = upto; op-- > 0;) {
        const struct cw_op *o = &wr->ops[op];
        for (unsigned j = 0; j < o->n; j++) {
            if (o->key[j] == k) {
                return (int)op;
            }
        }
    }
    return -1;
}

/* Does the image's @p got (@p n bytes, or absent) match what @p op (-1: nothing) left in key
 * @p k? */
static bool
cw_matches(const struct cw_writer *wr, int op, unsigned k, int rc, const void *got, size_t n)
{
    const struct cw_op *o = op >= 0 ? &wr->ops[op] : NULL;
    if (o == NULL || o->kind == CW_DEL) {
        return rc == HTKV_ENOTFOUND;
    }
    unsigned j = 0;
    while (o->key[j] != k) {
        j++;
    }
    unsigned char want[400];
    tu_fill(want, o->len, cw_tag(wr->id, (unsigned)op, j));
    return rc == 0 && n == o->len && memcmp(got, want, n) == 0;
}

/*
 * The operation whose value key @p k of @p wr holds in @p img: the last one acknowledged before
 * the cut (ops[0, acked)), or one issued after it; the latest that matches, or -2 when none
 * does. *@p acked_op is the first of these.
 */
static int
cw_found(htkv_db *img, const struct cw_writer *wr, unsigned k, unsigned acked, unsigned issued,
         int *acked_op)
{
    char key[32];
    void *got = NULL;
    size_t n = 0;
    int rc = htkv_get_alloc(img, key, cw_key(wr->id, k, key), &got, &n);
    *acked_op = cw_last_write(wr, k, acked);
    int found = cw_matches(wr, *acked_op, k, rc, got, n) ? *acked_op : -2;
    for (unsigned op = acked; op < issued; op++) {
        const struct cw_op *o = &wr->ops[op];
        for (unsigned j = 0; j < o->n; j++) {
            if (o->key[j] == k && cw_matches(wr, (int)op, k, rc, got, n)) {
                found = (int)op;
            }
        }
    }
    if (found == -2) {
        fprintf(stderr,
                "writer %u key %u: image has %s (%zu bytes), not the value of op %d "
                "(acknowledged before the cut) nor of a later op\n",
                wr->id, k, rc == 0 ? "a value" : htkv_strerror(rc), n, *acked_op);
    }
    htkv_free(got);
    return found;
}

/* Goal: see the file header. Method: CW_WRITERS threads write their own keys (puts, deletes,
 * batches across shards, conditional puts) in HTKV_SYNC_ALWAYS; when k operations in all are
 * acknowledged (a compaction runs at k / 2 meanwhile), the power is cut with the writers still
 * running. Each key of the image must hold its value as of its writer's last operation acknowledged
 * before the cut, or the value of a later operation of that writer; a batch found must be found in
 * every key it wrote. */
static void
test_fault_power_loss_concurrent_writers(void **state)
{
    (void)state;
    static const unsigned cuts[] = { 5, 150, 900 };
    static struct cw_writer wr[CW_WRITERS];
    for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
        for (int tear = 0; tear < 2; tear++) {
            uint64_t seed = tu_seed("powerloss-writers") + (uint64_t)c;
            struct pl_run run;
            pl_run_start(&run);
            tu_assert_hook_reset(); /* engine assertions on other threads abort */
            htkv_fault_sync_hook = sync_hook;
            htkv_db *db = tu_open(&run.cfg);
            atomic_store(&cw_stop, 0);
            atomic_store(&cw_errors, 0);
            for (unsigned w = 0; w < CW_WRITERS; w++) {
                wr[w].db = db;
                wr[w].id = w;
                wr[w].seed = seed ^ ((w + 1) * 0x9E3779B97F4A7C15ull);
                atomic_store(&wr[w].issued, 0);
                atomic_store(&wr[w].acked, 0);
                assert_int_equal(pthread_create(&wr[w].thread, NULL, cw_main, &wr[w]), 0);
            }
            unsigned acked_at_cut[CW_WRITERS];
            bool compacted = false;
            for (;;) {
                unsigned total = 0, running = 0;
                for (unsigned w = 0; w < CW_WRITERS; w++) {
                    acked_at_cut[w] = atomic_load(&wr[w].acked);
                    total += acked_at_cut[w];
                    running += atomic_load(&wr[w].issued) < CW_MAXOPS;
                }
                if (total >= cuts[c] || running == 0 || atomic_load(&cw_errors) != 0) {
                    break;
                }
                if (!compacted && total >= cuts[c] / 2 && cuts[c] > 1) {
                    assert_int_equal(htkv_compact_now(db), 0);
                    compacted = true;
                    continue;
                }
                struct timespec ts = { 0, 20000 };
                nanosleep(&ts, NULL);
            }
            /* acked_at_cut was read before the cut: those operations were acknowledged before
             * it. The writers run on while the power is cut, then stop. */
            pl_cut();
            atomic_store(&cw_stop, 1);
            unsigned acked_total = 0, issued_total = 0;
            for (unsigned w = 0; w < CW_WRITERS; w++) {
                assert_int_equal(pthread_join(wr[w].thread, NULL), 0);
                acked_total += acked_at_cut[w];
                issued_total += atomic_load(&wr[w].issued);
            }
            assert_int_equal(atomic_load(&cw_errors), 0);
            char what[128];
            snprintf(what, sizeof(what), "%s, %u writers: cut after %u acknowledged ops",
                     mode_name(&run.cfg), CW_WRITERS, acked_total);
            htkv_db *img = pl_run_cut(&run, db, tear != 0, what);
            unsigned checked = 0, later = 0;
            bool ok = true;
            for (unsigned w = 0; w < CW_WRITERS; w++) {
                unsigned issued = atomic_load(&wr[w].issued);
                int found[CW_KEYS];
                for (unsigned k = 0; k < CW_KEYS; k++) {
                    int acked_op;
                    found[k] = cw_found(img, &wr[w], k, acked_at_cut[w], issued, &acked_op);
                    ok = ok && found[k] != -2;
                    checked += acked_op >= 0;
                    later += found[k] != acked_op && found[k] >= 0;
                }
                /* Batch atomicity: every key of a batch found holds it or something newer. */
                for (unsigned k = 0; k < CW_KEYS && ok; k++) {
                    const struct cw_op *o = found[k] >= 0 ? &wr[w].ops[found[k]] : NULL;
                    for (unsigned j = 0; o != NULL && o->kind == CW_BATCH_PUT && j < o->n; j++) {
                        if (found[o->key[j]] < found[k]) {
                            fprintf(stderr,
                                    "writer %u: batch op %d found in key %u but not in %u\n", w,
                                    found[k], k, o->key[j]);
                            ok = false;
                        }
                    }
                }
            }
            fprintf(stderr,
                    "[powerloss] %s%s: %u ops issued, %u keys checked (%u hold a later value), "
                    "%u copies, %u read again\n",
                    what, tear ? ", torn" : "", issued_total, checked, later, pl.copies,
                    pl.rereads);
            assert_true(ok);
            pl_run_end(&run, img);
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_power_loss_keeps_acknowledged_writes),
        cmocka_unit_test(test_fault_power_loss_concurrent_writers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
