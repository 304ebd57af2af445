/*
 * fault_powerloss.c - power-loss simulation: after a power cut, a store holds only what it
 * fdatasynced, and only the names whose directory it fsynced.
 *
 * Method. The engine's sync hook (uring/ur_fault.h) runs after every fdatasync/fsync that a
 * durability promise rests on. For a file, the test keeps a copy of its bytes as they are at
 * that moment, by inode: that is what the disk holds. For a directory, it keeps the directory's
 * listing (name -> inode): those names survive. A simulated power cut at any moment builds a
 * new store from the last listings, each name filled with its inode's last synced bytes (empty
 * when never synced), and, to tear the last sector, optionally some garbage after the synced end
 * of the active segments. Recovery must then keep every write acknowledged in HTKV_SYNC_ALWAYS
 * and return nothing that was never written.
 *
 * Inline writes only (worker_threads = 0): the workers' fsyncs complete on their rings, where
 * the hook does not run. Segments are small so rotations, seals and manifest edits happen.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/support/testutil.h"
#include "uring/ur_fault.h"

#define NKEYS 150
#define MAXFILES 512

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

static struct {
    struct pl_inode inodes[MAXFILES];
    size_t ninodes;
    struct pl_entry entries[MAXFILES];
    size_t nentries;
    unsigned copies;
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

/* Copy the current bytes of @p fd (which may be open for writing only) into @p path. */
static void
copy_fd(int wfd, const char *path)
{
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", wfd);
    int fd = open(link, O_RDONLY | O_CLOEXEC); /* the same inode, readable */
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || out < 0) {
        if (fd >= 0) {
            close(fd);
        }
        if (out >= 0) {
            close(out);
        }
        return;
    }
    unsigned char buf[65536];
    off_t off = 0;
    ssize_t n;
    while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
        if (write(out, buf, (size_t)n) != n) {
            break;
        }
        off += n;
    }
    close(out);
    close(fd);
    pl.copies++;
}

/* A directory's listing replaces what was recorded for it. */
static void
record_dir(int fd)
{
    char link[64], dir[4200];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, dir, sizeof(dir) - 1);
    if (n <= 0) {
        return;
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
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL && pl.nentries < MAXFILES) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        struct pl_entry *e = &pl.entries[pl.nentries++];
        snprintf(e->dir, sizeof(e->dir), "%s", dir);
        snprintf(e->name, sizeof(e->name), "%s", de->d_name);
        e->ino = de->d_ino;
        e->is_dir = de->d_type == DT_DIR;
    }
    closedir(d);
}

static void
sync_hook(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        record_dir(fd);
        return;
    }
    struct pl_inode *n = pl_inode(st.st_ino);
    if (n != NULL) {
        copy_fd(fd, n->copy);
    }
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
 * synced bytes of every segment (a sector written but torn). */
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

/* Goal: see the file header. Method: for several cut points k (and torn or not), a fresh store
 * in HTKV_SYNC_ALWAYS takes k seeded operations (puts, deletes, batches across shards, a
 * compaction halfway), then the power is cut: the image must open and hold exactly the model of
 * the k acknowledged operations. */
static void
test_fault_power_loss_keeps_acknowledged_writes(void **state)
{
    (void)state;
    static const int cuts[] = { 1, 7, 60, 333, 700 };
    for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
        for (int tear = 0; tear < 2; tear++) {
            uint64_t seed = tu_seed("powerloss") + (uint64_t)c;
            char *dir = tu_tmpdir("powerloss");
            memset(&pl, 0, sizeof(pl));
            snprintf(pl_shadow, sizeof(pl_shadow), "%s/shadow", dir);
            assert_int_equal(mkdir(pl_shadow, 0755), 0);
            char store[4200], image[4200];
            snprintf(store, sizeof(store), "%s/store", dir);
            snprintf(image, sizeof(image), "%s/image", dir);
            htkv_config cfg;
            tu_config(&cfg, store, HTKV_SYNC_ALWAYS);
            cfg.worker_threads = 0;
            cfg.max_segment_bytes = 64u << 10;
            cfg.compaction_interval_ms = 0;
            cfg.hint_files = 0;
            htkv_fault_sync_hook = sync_hook;
            htkv_db *db = tu_open(&cfg);
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
            htkv_fault_sync_hook = NULL;
            pl_build_image(store, image, tear != 0);
            (void)htkv_close(db);
            htkv_config ic = cfg;
            ic.data_dir = image;
            htkv_db *img = NULL;
            int rc = htkv_open(&ic, &img);
            if (rc != 0) {
                fprintf(stderr, "cut after %d ops%s: open %s (%s)\n", cuts[c], tear ? ", torn" : "",
                        htkv_strerror(rc), htkv_last_error());
            }
            assert_int_equal(rc, 0);
            for (unsigned i = 0; i < NKEYS; i++) {
                size_t kl = key_of(i, key);
                if (tag[i] == 0) {
                    tu_expect(img, key, kl, NULL, 0);
                } else {
                    tu_fill(val, len[i], tag[i]);
                    tu_expect(img, key, kl, val, len[i]);
                }
            }
            assert_int_equal(htkv_close(img), 0);
            assert_true(pl.copies > 0);
            tu_rmrf(dir);
            free(dir);
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_power_loss_keeps_acknowledged_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
