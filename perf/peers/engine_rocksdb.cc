/* engine_rocksdb.cc - RocksDB adapter: default Options (create_if_missing), WAL on;
 * WriteOptions.sync = false for the fast rows, true for the durable ones. With bound_memory():
 * a block-based table with a Bloom filter of 10 bits a key and an LRU block cache of that size. */
#include "engine.h"

#include <cstring>

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/iterator.h>
#include <rocksdb/table.h>
#include <rocksdb/options.h>
#include <rocksdb/version.h>
#include <rocksdb/write_batch.h>

namespace peers
{
namespace
{

void
check(const rocksdb::Status &s, const char *what)
{
    if (!s.ok()) {
        throw std::runtime_error(std::string("rocksdb ") + what + ": " + s.ToString());
    }
}

class Rocks : public Engine
{
  public:
    ~Rocks() override
    {
        delete db_;
    }

    void open(const std::string &dir, bool durable) override
    {
        rocksdb::Options opt;
        opt.create_if_missing = true;
        if (cache_ > 0) {
            rocksdb::BlockBasedTableOptions t;
            t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
            t.block_cache = rocksdb::NewLRUCache(cache_);
            opt.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
        }
        wo_.sync = durable;
        check(rocksdb::DB::Open(opt, dir, &db_), "open");
    }

    void close() override
    {
        check(db_->Close(), "close");
        delete db_;
        db_ = nullptr;
    }

    void put(const void *k, size_t kl, const void *v, size_t vl) override
    {
        check(db_->Put(wo_, rocksdb::Slice(static_cast<const char *>(k), kl),
                       rocksdb::Slice(static_cast<const char *>(v), vl)),
              "put");
    }

    long get(const void *k, size_t kl, void *buf, size_t cap) override
    {
        rocksdb::PinnableSlice val;
        rocksdb::Status s = db_->Get(ro_, db_->DefaultColumnFamily(),
                                     rocksdb::Slice(static_cast<const char *>(k), kl), &val);
        if (s.IsNotFound()) {
            return -1;
        }
        check(s, "get");
        std::memcpy(buf, val.data(), val.size() < cap ? val.size() : cap);
        return static_cast<long>(val.size());
    }

    void batch_begin() override
    {
        batch_.Clear();
    }

    void batch_put(const void *k, size_t kl, const void *v, size_t vl) override
    {
        check(batch_.Put(rocksdb::Slice(static_cast<const char *>(k), kl),
                         rocksdb::Slice(static_cast<const char *>(v), vl)),
              "batch put");
    }

    void batch_commit() override
    {
        check(db_->Write(wo_, &batch_), "write");
    }

    size_t prefix(const void *p, size_t pl, uint64_t *sum, std::vector<std::string> *keys) override
    {
        std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro_));
        rocksdb::Slice pre(static_cast<const char *>(p), pl);
        size_t n = 0;
        for (it->Seek(pre); it->Valid() && it->key().starts_with(pre); it->Next()) {
            rocksdb::Slice v = it->value();
            n++;
            *sum += v.size() + (v.size() > 0 ? static_cast<unsigned char>(v[0]) : 0);
            if (keys != nullptr) {
                keys->push_back(it->key().ToString());
            }
        }
        check(it->status(), "iterator");
        return n;
    }

    void bound_memory(uint64_t bytes) override
    {
        cache_ = bytes;
    }

  private:
    uint64_t cache_ = 0;
    rocksdb::DB *db_ = nullptr;
    rocksdb::WriteOptions wo_;
    rocksdb::ReadOptions ro_;
    rocksdb::WriteBatch batch_;
};

} // namespace

std::string
rocksdb_version()
{
    return std::to_string(ROCKSDB_MAJOR) + "." + std::to_string(ROCKSDB_MINOR) + "." +
           std::to_string(ROCKSDB_PATCH);
}

std::unique_ptr<Engine>
make_rocksdb()
{
    return std::make_unique<Rocks>();
}

} // namespace peers
