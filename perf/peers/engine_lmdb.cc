/* engine_lmdb.cc - LMDB adapter: one write transaction per put (per batch for batches);
 * MDB_NOSYNC for the fast rows, the default (synchronous commits) for the durable ones; "LMDB
 * wm" adds MDB_WRITEMAP in both. Reads reuse one read-only transaction, renewed every 1,024
 * gets (mdb_txn_reset + mdb_txn_renew, as LMDB recommends), and released at the end of a read
 * phase; a prefix query renews it once per query. */
#include "engine.h"

#include <cstring>

#include <lmdb.h>
#include <sys/stat.h>
#include <cerrno>

namespace peers
{
namespace
{

void
check(int rc, const char *what)
{
    if (rc != 0) {
        throw std::runtime_error(std::string("lmdb ") + what + ": " + mdb_strerror(rc));
    }
}

class Lmdb : public Engine
{
  public:
    explicit Lmdb(bool writemap) : writemap_(writemap)
    {
    }
    ~Lmdb() override
    {
        if (env_ != nullptr) {
            close();
        }
    }

    void open(const std::string &dir, bool durable) override
    {
        if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
            throw std::runtime_error("lmdb: mkdir " + dir + ": " + std::strerror(errno));
        }
        check(mdb_env_create(&env_), "env_create");
        /* 4 GiB of address space; the file only grows as pages are used (sparse with
         * MDB_WRITEMAP). */
        check(mdb_env_set_mapsize(env_, 4ull << 30), "set_mapsize");
        unsigned flags = (durable ? 0u : MDB_NOSYNC) | (writemap_ ? MDB_WRITEMAP : 0u);
        check(mdb_env_open(env_, dir.c_str(), flags, 0644), "env_open");
        MDB_txn *txn;
        check(mdb_txn_begin(env_, nullptr, 0, &txn), "txn_begin");
        check(mdb_dbi_open(txn, nullptr, 0, &dbi_), "dbi_open");
        check(mdb_txn_commit(txn), "commit");
    }

    void close() override
    {
        reads_done();
        if (wtxn_ != nullptr) {
            mdb_txn_abort(wtxn_);
            wtxn_ = nullptr;
        }
        mdb_env_close(env_); /* MDB_NOSYNC: the data is in the page cache, as the others' */
        env_ = nullptr;
    }

    void put(const void *k, size_t kl, const void *v, size_t vl) override
    {
        MDB_txn *txn;
        check(mdb_txn_begin(env_, nullptr, 0, &txn), "txn_begin");
        MDB_val key{ kl, const_cast<void *>(k) }, val{ vl, const_cast<void *>(v) };
        int rc = mdb_put(txn, dbi_, &key, &val, 0);
        if (rc != 0) {
            mdb_txn_abort(txn);
            check(rc, "put");
        }
        check(mdb_txn_commit(txn), "commit");
    }

    long get(const void *k, size_t kl, void *buf, size_t cap) override
    {
        read_txn();
        MDB_val key{ kl, const_cast<void *>(k) }, val;
        int rc = mdb_get(rtxn_, dbi_, &key, &val);
        long out = -1;
        if (rc != MDB_NOTFOUND) {
            check(rc, "get");
            std::memcpy(buf, val.mv_data, val.mv_size < cap ? val.mv_size : cap);
            out = static_cast<long>(val.mv_size);
        }
        if (++reads_ % 1024 == 0) {
            mdb_txn_reset(rtxn_);
            check(mdb_txn_renew(rtxn_), "txn_renew");
        }
        return out;
    }

    void reads_done() override
    {
        if (rtxn_ != nullptr) {
            mdb_txn_abort(rtxn_);
            rtxn_ = nullptr;
        }
    }

    void batch_begin() override
    {
        check(mdb_txn_begin(env_, nullptr, 0, &wtxn_), "txn_begin");
    }

    void batch_put(const void *k, size_t kl, const void *v, size_t vl) override
    {
        MDB_val key{ kl, const_cast<void *>(k) }, val{ vl, const_cast<void *>(v) };
        check(mdb_put(wtxn_, dbi_, &key, &val, 0), "put");
    }

    void batch_commit() override
    {
        MDB_txn *txn = wtxn_;
        wtxn_ = nullptr;
        check(mdb_txn_commit(txn), "commit");
    }

    size_t prefix(const void *p, size_t pl, uint64_t *sum, std::vector<std::string> *keys) override
    {
        if (rtxn_ == nullptr) {
            check(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &rtxn_), "txn_begin");
        } else {
            mdb_txn_reset(rtxn_);
            check(mdb_txn_renew(rtxn_), "txn_renew");
        }
        MDB_cursor *c;
        check(mdb_cursor_open(rtxn_, dbi_, &c), "cursor_open");
        MDB_val key{ pl, const_cast<void *>(p) }, val;
        size_t n = 0;
        int rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
        while (rc == 0 && key.mv_size >= pl && std::memcmp(key.mv_data, p, pl) == 0) {
            n++;
            *sum += val.mv_size +
                    (val.mv_size > 0 ? static_cast<const unsigned char *>(val.mv_data)[0] : 0);
            if (keys != nullptr) {
                keys->emplace_back(static_cast<const char *>(key.mv_data), key.mv_size);
            }
            rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
        }
        mdb_cursor_close(c);
        if (rc != 0 && rc != MDB_NOTFOUND) {
            check(rc, "cursor_get");
        }
        return n;
    }

  private:
    void read_txn()
    {
        if (rtxn_ == nullptr) {
            check(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &rtxn_), "txn_begin");
        }
    }

    bool writemap_;
    MDB_env *env_ = nullptr;
    MDB_dbi dbi_ = 0;
    MDB_txn *rtxn_ = nullptr;
    MDB_txn *wtxn_ = nullptr;
    uint64_t reads_ = 0;
};

} // namespace

std::string
lmdb_version()
{
    return std::to_string(MDB_VERSION_MAJOR) + "." + std::to_string(MDB_VERSION_MINOR) + "." +
           std::to_string(MDB_VERSION_PATCH);
}

std::unique_ptr<Engine>
make_lmdb(bool writemap)
{
    return std::make_unique<Lmdb>(writemap);
}

} // namespace peers
