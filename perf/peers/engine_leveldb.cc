/* engine_leveldb.cc - LevelDB adapter: default Options (create_if_missing), log on;
 * WriteOptions.sync = false for the fast rows, true for the durable ones. */
#include "engine.h"

#include <cstring>

#include <leveldb/db.h>
#include <leveldb/write_batch.h>

namespace peers
{
namespace
{

void
check(const leveldb::Status &s, const char *what)
{
    if (!s.ok()) {
        throw std::runtime_error(std::string("leveldb ") + what + ": " + s.ToString());
    }
}

class Level : public Engine
{
  public:
    ~Level() override
    {
        delete db_;
    }

    void open(const std::string &dir, bool durable) override
    {
        leveldb::Options opt;
        opt.create_if_missing = true;
        wo_.sync = durable;
        check(leveldb::DB::Open(opt, dir, &db_), "open");
    }

    void close() override
    {
        delete db_;
        db_ = nullptr;
    }

    void put(const void *k, size_t kl, const void *v, size_t vl) override
    {
        check(db_->Put(wo_, leveldb::Slice(static_cast<const char *>(k), kl),
                       leveldb::Slice(static_cast<const char *>(v), vl)),
              "put");
    }

    long get(const void *k, size_t kl, void *buf, size_t cap) override
    {
        leveldb::Status s = db_->Get(ro_, leveldb::Slice(static_cast<const char *>(k), kl), &val_);
        if (s.IsNotFound()) {
            return -1;
        }
        check(s, "get");
        std::memcpy(buf, val_.data(), val_.size() < cap ? val_.size() : cap);
        return static_cast<long>(val_.size());
    }

    void batch_begin() override
    {
        batch_.Clear();
    }

    void batch_put(const void *k, size_t kl, const void *v, size_t vl) override
    {
        batch_.Put(leveldb::Slice(static_cast<const char *>(k), kl),
                   leveldb::Slice(static_cast<const char *>(v), vl));
    }

    void batch_commit() override
    {
        check(db_->Write(wo_, &batch_), "write");
    }

    size_t prefix(const void *p, size_t pl, uint64_t *sum, std::vector<std::string> *keys) override
    {
        std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(ro_));
        leveldb::Slice pre(static_cast<const char *>(p), pl);
        size_t n = 0;
        for (it->Seek(pre); it->Valid() && it->key().starts_with(pre); it->Next()) {
            leveldb::Slice v = it->value();
            n++;
            *sum += v.size() + (v.size() > 0 ? static_cast<unsigned char>(v[0]) : 0);
            if (keys != nullptr) {
                keys->push_back(it->key().ToString());
            }
        }
        check(it->status(), "iterator");
        return n;
    }

  private:
    leveldb::DB *db_ = nullptr;
    leveldb::WriteOptions wo_;
    leveldb::ReadOptions ro_;
    leveldb::WriteBatch batch_;
    std::string val_;
};

} // namespace

std::string
leveldb_version()
{
    return std::to_string(leveldb::kMajorVersion) + "." + std::to_string(leveldb::kMinorVersion);
}

std::unique_ptr<Engine>
make_leveldb()
{
    return std::make_unique<Level>();
}

} // namespace peers
