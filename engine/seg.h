/*
 * seg.h - a segment file: a header, then records appended through a shared writable mapping.
 *
 * Segment life:
 *
 *     htkv_seg_create()          append (shard)          htkv_seg_seal()
 *   ------------------> ACTIVE ----------------> ACTIVE ----------------> SEALED
 *                          ^                                                |
 *                          | htkv_seg_open() + recovery (no SEAL record)    | htkv_seg_close()
 *                                                                           v
 *                                                                        closed
 *
 * Appends are plain stores into a MAP_SHARED mapping of the file: the bytes are in the kernel's
 * page cache the moment the store completes, so an acknowledged write survives a crash of the
 * process without a system call per write; fdatasync() makes them durable. Where every write
 * waits for its fdatasync (HTKV_SYNC_ALWAYS) the writes of callers go through pwrite() instead
 * (write_through): on ext4 an fdatasync after stores through a mapping costs ~1.6x one after
 * pwrite() of the same bytes (the extra time is inside fdatasync), which is more than the system
 * call costs. Either way the bytes are in the page cache, and the mapping reads them, before
 * anything points at them. The file is extended with fallocate() (or explicit zeros where the
 * file system lacks it) before any store reaches new space, so a store never lands in a hole: no
 * SIGBUS, no ENOSPC in the middle of a record. Writes of at least SEG_WT_MIN_BYTES go through
 * pwrite() in every mode: each page a store through the mapping reaches faults, and faults again
 * after each fdatasync write-protected it (with a TLB flush on every CPU of the process), which
 * costs far more than the system call once a write spans pages (ARCHITECTURE.md).
 *
 * File header (64 bytes): magic "HTKVSEG1", format u32, shard u32, seg_id u64, shard_count u32,
 * hash_seed u64, zero[24], crc32c u32 of bytes 0..59. Records start at SEG_DATA_OFF. The shard
 * count and hash seed (zero in segments of older builds) name the store the segment belongs to,
 * so that htkvctl repair can rebuild a store whose manifests are all lost.
 */
#ifndef HTKV_ENGINE_SEG_H
#define HTKV_ENGINE_SEG_H

#include <pthread.h>
#include <stdatomic.h>

#include "engine/internal.h"
#include "engine/rec.h"

struct htkv_log_sink;

#define SEG_HDR_BYTES 64u
#define SEG_DATA_OFF SEG_HDR_BYTES
#define SEG_MAGIC "HTKVSEG1"
/* First allocation of a new segment and the smallest growth step: 1 MiB. */
#define SEG_GROW_MIN (1u << 20)
/* Largest segment: offsets are u32 in the index (4 GiB - 1). */
#define SEG_BYTES_LIMIT 0xFFFFF000ull

struct kix;

struct seg {
    uint64_t id;
    uint32_t shard;
    /* -1 once released (htkv_seg_release_fd()): a sealed segment is read through its mapping
     * only, so it holds no descriptor; a call below that needs one reopens the file by path and
     * checks that it is still the file mapped (dev, ino). */
    int fd;
    dev_t dev;
    ino_t ino;
    unsigned char *map;  /* mapping of map_bytes; file bytes beyond file_bytes never touched */
    uint64_t map_bytes;  /* reserved virtual size = capacity of the segment */
    uint64_t file_bytes; /* allocated file size */
    uint64_t tail;       /* end of the last record (next append offset) */
    uint64_t records;    /* records in the segment (control records included) */
    bool sealed;
    bool writable;
    bool zero_fill;     /* grow with written zeros instead of fallocate (cheaper fdatasyncs) */
    bool write_through; /* every caller's append is buffered and written with pwrite() */
    /* The caller's write in progress is buffered (write-through): set by htkv_seg_wbuf_reserve()
     * for write_through segments and for writes of at least SEG_WT_MIN_BYTES, unless a record
     * of the same write already went to the mapping (direct_since_out); both reset by
     * htkv_seg_write_out(), which ends every caller's write. So one write is all buffered or all
     * stored through the mapping. */
    bool wt_now;
    bool direct_since_out;
    /* write_through: records appended since the last htkv_seg_write_out(), for the file range
     * [wbuf_off, wbuf_off + wbuf_len); wbuf_recs of them. */
    unsigned char *wbuf;
    size_t wbuf_len, wbuf_cap;
    uint64_t wbuf_off;
    uint64_t wbuf_recs;
    uint64_t wb_from; /* htkv_seg_writeback_start(): writeback started below this offset */
    _Atomic uint64_t live_bytes; /* bytes of records that are the newest version of a key */
    _Atomic uint64_t dead_bytes; /* bytes of superseded records */
    /* fdatasyncs in flight outside the shard's lock (a group sync, the interval syncer, a
     * worker's ring): a segment dropped by compaction is closed only once this is 0. Taken
     * under the shard's lock on the active segment only, so a sealed segment gains none. */
    _Atomic uint32_t io_pins;
    /* A write-back error is reported once per descriptor: to whichever fdatasync of it checks
     * first. So the fdatasyncs of one file run one at a time (htkv_seg_sync() holds sync_lock),
     * and the first failure stays (sync_err, under sync_lock): every later sync of the file
     * reports it, so none can succeed over pages an earlier one lost. */
    pthread_mutex_t sync_lock;
    int sync_err;
    uint64_t max_version; /* highest record version appended or recovered */
    uint64_t hint_tail;   /* end of the records its hint file describes; 0 = no hint */
    /* Its key index, once a memory budget wrote one (cold.c; set under the shard's lock before
     * the segment enters the shard's cold set, never changed after): closed and its file
     * removed with the segment. */
    struct kix *kix;
    uint64_t kix_upto; /* every head entry into it at or below this version is in its kix */
    bool cold_out;     /* a compaction victim: out of the cold set, entries stay in memory */
    /* Cold keys whose newest version it holds, values and tombstones (cold.c; shard lock). */
    uint32_t cold_vals, cold_dels;
    bool rescue_failed; /* its records failed when its key index was checked against them */
    char path[];
};

/* The store a new segment belongs to, written into its header. */
struct seg_owner {
    uint32_t shard;
    uint32_t shard_count;
    uint64_t hash_seed;
};

/*
 * Create segment @p id of shard @p o->shard in directory @p dir (path of the shard directory), with
 * room for @p cap bytes and SEG_GROW_MIN (or @p first when larger) allocated, as written zeros when
 * @p zero_fill. The file is fsynced; the caller fsyncs the directory. Returns 0, -ENOSPC, -ENOMEM
 * or another -errno.
 */
int htkv_seg_create(const char *dir, const struct seg_owner *o, uint64_t id, uint64_t cap,
                    uint64_t first, bool zero_fill, struct seg **out);

/*
 * Does segment file @p path (@p dir_fd-relative, or absolute with AT_FDCWD) of segment @p id
 * hold a record that checks (htkv_rec_check(), values up to @p val_max, as a record of @p id or
 * of the id its header names) anywhere after its header? A file the manifest does not list may be
 * removed only when it holds none: its records would be unrecoverable anyway, and a record's CRC
 * covers its segment id and offset, so none is found by chance. A file that cannot be read, or is
 * not a regular file, counts as holding records. A missing file holds none.
 */
bool htkv_seg_file_has_record(int dir_fd, const char *path, uint64_t id, uint32_t val_max);

/* Encode the 64-byte header of segment @p id of @p o into @p h (htkvctl repair writes
 * segments too). */
void htkv_seg_hdr_encode(unsigned char *h, const struct seg_owner *o, uint64_t id);

/* The store an open segment's header names (shard count and hash seed 0: an older build). */
void htkv_seg_owner_of(const struct seg *s, struct seg_owner *o);

/*
 * Read the header of segment file @p path: 0 with its shard, id, shard count and hash seed (both
 * 0 in segments of older builds), HTKV_ECORRUPT (bad magic or checksum, short file),
 * HTKV_EVERSION or -errno. Does not map the file (htkvctl repair).
 */
int htkv_seg_read_header(const char *path, struct seg_owner *o, uint64_t *id);

/*
 * Open existing segment file @p path, check its header against (@p shard, @p id), map it for
 * @p cap bytes (at least its size). Returns 0, HTKV_ECORRUPT (bad or short header),
 * HTKV_EVERSION, -ENOMEM or -errno (open, fstat, a failed read of the header, mmap).
 */
int htkv_seg_open(const char *path, uint32_t shard, uint64_t id, uint64_t cap, bool writable,
                  struct seg **out);

/*
 * Stores through the mapping leave dirty, writable page-table entries behind them. Writeback
 * (the INTERVAL syncer's fdatasync, or the kernel's own) must write-protect each such page
 * before writing it (folio_mkclean), which flushes the TLB of every CPU running the process:
 * one inter-processor interrupt per 4 KiB page, which cost ~30% of a 16 B / 64 B put here.
 * So once the tail leaves a chunk of SEG_MAP_CHUNK bytes, htkv_seg_map_advance() drops the
 * chunk's page-table entries (madvise(MADV_DONTNEED): on a shared file mapping the pages, and
 * their dirty state, stay in the page cache): one flush for 64 pages, and writeback finds
 * nothing mapped to clean. A later read of such a page maps it again, read-only (one minor
 * fault per page). The data and its durability are not touched: only page-table entries go.
 */
#define SEG_MAP_CHUNK (256u << 10)

/* An append at @p off moved the tail of @p s into a later chunk: drop the
 * page-table entries of the whole chunks behind it. Owning shard's lock held (the writer). */
void htkv_seg_map_advance(struct seg *s, uint64_t off);

/* Bytes a SEAL record takes: a segment created by this process keeps them free at its end. */
#define SEG_SEAL_BYTES (REC_HDR_BYTES + REC_SEAL_PAYLOAD)
HTKV_STATIC_ASSERT(SEG_SEAL_BYTES % REC_ALIGN == 0, "seal record keeps alignment");

/* Encode one record at the tail of @p s: into the write-through buffer when @p buffered and it
 * has room, else into the mapping. Returns its offset. Inline: the write path runs it per
 * record. */
static inline uint64_t
htkv_seg_append_at(struct seg *s, bool buffered, uint8_t type, uint8_t flags, uint64_t version,
                   const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
    uint64_t off = s->tail;
    uint64_t size = htkv_rec_size(klen, vlen);
    HTKV_ASSERT(off + size <= s->file_bytes);
    unsigned char *dst = s->map + off;
    if (buffered && s->wt_now && s->wbuf_cap - s->wbuf_len >= size) {
        if (s->wbuf_len == 0) {
            s->wbuf_off = off;
        }
        dst = s->wbuf + s->wbuf_len;
        s->wbuf_len += size;
        s->wbuf_recs++;
    } else {
        HTKV_ASSERT(s->wbuf_len == 0); /* buffered records end at the tail */
        s->direct_since_out |= buffered;
    }
    uint64_t w = htkv_rec_encode(dst, s->id, off, type, flags, version, key, klen, val, vlen);
    HTKV_ASSERT(w == size);
    s->tail = off + size;
    if (HTKV_UNLIKELY((off ^ s->tail) >= SEG_MAP_CHUNK)) {
        htkv_seg_map_advance(s, off);
    }
    s->records++;
    if (type != REC_SEAL && version > s->max_version) {
        s->max_version = version;
    }
    return off;
}

/*
 * Append one record at the tail of @p s, directly into the mapping (room reserved with
 * htkv_seg_reserve(); nothing buffered). Returns its offset. The owning shard's lock is held.
 */
static inline uint64_t
htkv_seg_append(struct seg *s, uint8_t type, uint8_t flags, uint64_t version, const void *key,
                uint32_t klen, const void *val, uint32_t vlen)
{
    return htkv_seg_append_at(s, false, type, flags, version, key, klen, val, vlen);
}

/*
 * htkv_seg_append() for a caller's write: in a write_through segment the record goes to the
 * segment's buffer (room reserved with htkv_seg_wbuf_reserve()), and the caller must
 * htkv_seg_write_out() before anything points at it. Lock held.
 */
static inline uint64_t
htkv_seg_append_wt(struct seg *s, uint8_t type, uint8_t flags, uint64_t version, const void *key,
                   uint32_t klen, const void *val, uint32_t vlen)
{
    return htkv_seg_append_at(s, true, type, flags, version, key, klen, val, vlen);
}

/* Write SEAL at the tail of @p s and fdatasync it; s->sealed on success. 0 or -errno. */
int htkv_seg_seal(struct seg *s);

/* EBR free function of a segment: htkv_seg_close(). */
void htkv_seg_close_cb(void *p);

/* Once no fdatasync of @p s is in flight (io_pins), unlink its file and its hint; its mapping
 * stays valid until it is closed. For a segment already out of its shard's list and out of the
 * manifest: a file that cannot be removed is logged through @p log and left as an orphan for the
 * next open. */
void htkv_seg_remove_files(const struct htkv_log_sink *log, struct seg *s);

/* Path of the hint file of segment file @p seg_path ("...NNNN.seg" -> "...NNNN.hint"): a
 * segment's files are named here; hint.c owns the hint format. */
void htkv_hint_path(char *buf, size_t cap, const char *seg_path);

/* Path of the key index file of segment file @p seg_path ("...NNNN.seg" -> "...NNNN.kix"). */
void htkv_kix_path(char *buf, size_t cap, const char *seg_path);

/* Make sure [tail, tail + need) is allocated. Returns 0, HTKV_EFULL (beyond capacity), -ENOSPC,
 * -errno. */
int htkv_seg_reserve(struct seg *s, uint64_t need);

/* Allocate the file up to @p size bytes (<= map_bytes). 0, -ENOSPC or -errno. */
int htkv_seg_grow_to(struct seg *s, uint64_t size);

/* Writes of at least this many bytes of records go through pwrite() in every sync mode; smaller
 * ones are stored through the mapping. The crossover measured on a 2-CPU VM once the mapping's
 * page-table entries are dropped behind the tail (htkv_seg_map_advance()): 16 B keys, 200,000
 * puts, values of 512 / 600 / 700 / 800 / 1,200 bytes: the mapping 1.15x / 1.16x / 1.00x /
 * 0.95x / 0.83x pwrite(). It was 512 while writeback's per-page TLB flushes made mapped stores
 * dearer. */
#define SEG_WT_MIN_BYTES 768u

/* A caller's write of @p bytes of records begins (a group staged record by record): buffer all
 * of it when @p bytes >= SEG_WT_MIN_BYTES, unless a record of it already went to the mapping. */
static inline void
htkv_seg_wt_begin(struct seg *s, uint64_t bytes)
{
    if (bytes >= SEG_WT_MIN_BYTES && !s->direct_since_out) {
        s->wt_now = true;
    }
}

/* Make room in the buffer for @p need more bytes of records of a caller's write, when it is to be
 * buffered (write_through, or @p need >= SEG_WT_MIN_BYTES, see wt_now). 0 or -ENOMEM. */
int htkv_seg_wbuf_reserve(struct seg *s, uint64_t need);

/*
 * write_through: pwrite() the buffered records into the file (the page cache). On failure the
 * segment's tail and record count go back to where the buffer began, as if the records had never
 * been appended. 0 (also with nothing buffered) or -errno.
 */
int htkv_seg_write_out(struct seg *s);

/* Bytes of records gathered behind the tail before their writeback is started. */
#define SEG_WRITEBACK_CHUNK (1u << 20)

/*
 * For a store that never syncs on its own (HTKV_SYNC_NEVER): once SEG_WRITEBACK_CHUNK bytes of
 * whole pages lie behind the tail since the last call that acted, start the kernel's writeback
 * of them (sync_file_range(SYNC_FILE_RANGE_WRITE): it does not wait for the disk). Records are
 * never written behind the tail again, so no page is made dirty again. The fdatasync that seals
 * the segment, on a writer's path, then finds at most about SEG_WRITEBACK_CHUNK left to write
 * instead of the whole segment. Promises nothing about durability; a failure is ignored (the
 * seal's fdatasync reports write errors). Lock of the owner held.
 */
void htkv_seg_writeback_start(struct seg *s);

/* fdatasync the segment, after any other fdatasync of it through this function. Returns 0, or
 * -errno (that of the first failed sync of the segment, once one failed: see sync_err). */
int htkv_seg_sync(struct seg *s);

/*
 * The result @p res of an fdatasync of @p s that ran elsewhere (a worker's ring) as the file's
 * syncs see it: a failure is remembered, and a success after a remembered failure is that
 * failure. Taking sync_lock waits for an htkv_seg_sync() in progress, which records what it
 * finds before it lets go. Returns the result to act on.
 */
int htkv_seg_sync_result(struct seg *s, int res);

/* Overwrite [from, to) with zeros and make that durable (torn-tail removal). 0 or -errno. */
int htkv_seg_zero(struct seg *s, uint64_t from, uint64_t to);

/* Give back allocated space past the tail (at close). 0 or -errno. */
int htkv_seg_trim(struct seg *s);

/* True when the @p n bytes at @p p are all zero. */
bool htkv_seg_all_zero(const unsigned char *p, uint64_t n);

/* End of the last non-zero byte of map[from, end), or @p from when they are all zero. */
uint64_t htkv_seg_last_nonzero_end(const unsigned char *map, uint64_t from, uint64_t end);

/* The same over @p s's mapping, skipping what its file system reports as holes (its open fd; the
 * whole range is read when it has none). */
uint64_t htkv_seg_data_end(const struct seg *s, uint64_t from, uint64_t end);

/* Count an fdatasync of @p s in flight outside its shard's lock (see io_pins). */
static inline void
htkv_seg_pin(struct seg *s)
{
    atomic_fetch_add_explicit(&s->io_pins, 1, memory_order_acq_rel);
}

static inline void
htkv_seg_unpin(struct seg *s)
{
    atomic_fetch_sub_explicit(&s->io_pins, 1, memory_order_acq_rel);
}

/*
 * Close the descriptor of @p s, keeping its mapping: a store's open descriptors stay bounded by
 * its shards (their active segments), not by its data. The caller owns every use of s->fd: no
 * fdatasync in flight (io_pins 0), nothing buffered, and none started concurrently (a sealed
 * segment under its shard's lock, or a segment nobody else can see yet). Calls that need the
 * descriptor later reopen it.
 */
void htkv_seg_release_fd(struct seg *s);

/* Unmap and close; frees @p s. NULL accepted. */
void htkv_seg_close(struct seg *s);

/* Path of segment @p id in shard directory @p dir into @p buf. */
void htkv_seg_path(char *buf, size_t cap, const char *dir, uint64_t id);

#endif
