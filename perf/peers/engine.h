/*
 * engine.h - the common face of the stores compared by htkv-peers: htkv and Debian's RocksDB,
 * LevelDB, LMDB, Tkrzw and WiredTiger. One adapter per store, each in its own file, so that no
 * two stores' headers meet in one translation unit. Every method throws std::runtime_error on
 * failure. Tkrzw and WiredTiger are optional: their adapters are built only when CMake finds
 * their packages (HTKV_PEERS_TKRZW, HTKV_PEERS_WIREDTIGER are then defined).
 */
#ifndef HTKV_PEERS_ENGINE_H
#define HTKV_PEERS_ENGINE_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace peers
{

class Engine
{
  public:
    virtual ~Engine() = default;

    /* Open (create if missing) the store in directory @p dir. durable: every write (put, batch
     * commit) returns only after an fdatasync; otherwise the store's natural fast mode. */
    virtual void open(const std::string &dir, bool durable) = 0;
    /* Close the store (flushing what the store flushes at close). */
    virtual void close() = 0;
    /* Before open: bound the store's index memory to about @p bytes (0: its default). htkv: its
     * memory_budget_bytes; RocksDB: a block cache of that size and a Bloom filter of 10 bits a
     * key. Stores without such a bound ignore it (the cold_cache row runs only the two). */
    virtual void bound_memory(uint64_t bytes)
    {
        (void)bytes;
    }

    virtual void put(const void *k, size_t kl, const void *v, size_t vl) = 0;
    /* Copy the value of @p k into @p buf; return its length, or -1 when absent. */
    virtual long get(const void *k, size_t kl, void *buf, size_t cap) = 0;
    /* Readers that keep a read transaction (LMDB) release it here, at the end of a read phase. */
    virtual void reads_done()
    {
    }

    /* One atomic batch of puts: begin, puts, commit (synced when durable). */
    virtual void batch_begin() = 0;
    virtual void batch_put(const void *k, size_t kl, const void *v, size_t vl) = 0;
    virtual void batch_commit() = 0;

    /* Visit every key that starts with @p p in key order; return the count and add the value
     * lengths and first bytes to *sum. With keys != nullptr, also collect the keys (to check
     * the order, untimed). A store without key order (Tkrzw's hash database) throws; the
     * harness does not call it there (EngineSpec::ordered). */
    virtual size_t prefix(const void *p, size_t pl, uint64_t *sum,
                          std::vector<std::string> *keys) = 0;
};

/* workers < 0: htkv's default (the CPU count); 0: inline. */
std::unique_ptr<Engine> make_htkv(int workers);
std::unique_ptr<Engine> make_rocksdb();
std::unique_ptr<Engine> make_leveldb();
std::unique_ptr<Engine> make_lmdb(bool writemap);
/* tree: Tkrzw's TreeDBM (B+ tree, ordered); otherwise its HashDBM (no key order). */
std::unique_ptr<Engine> make_tkrzw(bool tree);
std::unique_ptr<Engine> make_wiredtiger();

/* Library versions, from the headers built against. */
std::string rocksdb_version();
std::string leveldb_version();
std::string lmdb_version();
std::string tkrzw_version();
std::string wiredtiger_version();

} // namespace peers

#endif
