/* engine_tkrzw.cc - Tkrzw adapter: TreeDBM ("Tkrzw tree", file casket.tkt) or HashDBM ("Tkrzw
 * hash", file casket.tkh) in the store's directory, opened with DBM::Open and no tuning
 * parameters (the defaults: in-place updates, 1,048,583 hash buckets, tree pages of 8,130
 * bytes with 10,000 cached). Tkrzw has no write-ahead log and no per-write sync option: the fast
 * rows only Set (the data reaches the file when Tkrzw writes it back or at Close); the durable
 * rows call Synchronize(true) (flush, then fsync of the file) after every put and after every
 * batch. A batch is its puts one by one (Set, as DBM::SetMulti does), not atomic. Tkrzw's
 * databases are thread-safe: one handle serves every thread. HashDBM has no key order: prefix
 * throws, and the harness does not run the prefix row for it. */
#include "engine.h"

#include <cerrno>
#include <cstring>

#include <sys/stat.h>
#include <tkrzw_dbm_hash.h>
#include <tkrzw_dbm_tree.h>

namespace peers
{
namespace
{

void
check(const tkrzw::Status &s, const char *what)
{
    if (!s.IsOK()) {
        throw std::runtime_error(std::string("tkrzw ") + what + ": " + s.GetMessage() + " (" +
                                 tkrzw::Status::CodeName(s.GetCode()) + ")");
    }
}

class Tkrzw : public Engine
{
  public:
    explicit Tkrzw(bool tree) : tree_(tree)
    {
    }
    ~Tkrzw() override
    {
        if (db_ != nullptr) {
            (void)db_->Close();
        }
    }

    void open(const std::string &dir, bool durable) override
    {
        if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
            throw std::runtime_error("tkrzw: mkdir " + dir + ": " + std::strerror(errno));
        }
        durable_ = durable;
        if (tree_) {
            db_ = std::make_unique<tkrzw::TreeDBM>();
        } else {
            db_ = std::make_unique<tkrzw::HashDBM>();
        }
        check(db_->Open(dir + (tree_ ? "/casket.tkt" : "/casket.tkh"), true), "open");
    }

    void close() override
    {
        std::unique_ptr<tkrzw::DBM> db = std::move(db_);
        check(db->Close(), "close");
    }

    void put(const void *k, size_t kl, const void *v, size_t vl) override
    {
        check(db_->Set(std::string_view(static_cast<const char *>(k), kl),
                       std::string_view(static_cast<const char *>(v), vl)),
              "set");
        if (durable_) {
            check(db_->Synchronize(true), "synchronize");
        }
    }

    long get(const void *k, size_t kl, void *buf, size_t cap) override
    {
        thread_local std::string val;
        tkrzw::Status s = db_->Get(std::string_view(static_cast<const char *>(k), kl), &val);
        if (s == tkrzw::Status::NOT_FOUND_ERROR) {
            return -1;
        }
        check(s, "get");
        std::memcpy(buf, val.data(), val.size() < cap ? val.size() : cap);
        return static_cast<long>(val.size());
    }

    void batch_begin() override
    {
    }

    void batch_put(const void *k, size_t kl, const void *v, size_t vl) override
    {
        check(db_->Set(std::string_view(static_cast<const char *>(k), kl),
                       std::string_view(static_cast<const char *>(v), vl)),
              "set");
    }

    void batch_commit() override
    {
        if (durable_) {
            check(db_->Synchronize(true), "synchronize");
        }
    }

    size_t prefix(const void *p, size_t pl, uint64_t *sum, std::vector<std::string> *keys) override
    {
        if (!tree_) {
            throw std::runtime_error("tkrzw hash: no key order, no prefix query");
        }
        std::unique_ptr<tkrzw::DBM::Iterator> it = db_->MakeIterator();
        std::string_view pre(static_cast<const char *>(p), pl);
        check(it->Jump(pre), "jump");
        std::string k, v;
        size_t n = 0;
        for (;;) {
            tkrzw::Status s = it->Get(&k, &v);
            if (s == tkrzw::Status::NOT_FOUND_ERROR) {
                break;
            }
            check(s, "iterator get");
            if (k.compare(0, pl, pre) != 0) {
                break;
            }
            n++;
            *sum += v.size() + (v.empty() ? 0 : static_cast<unsigned char>(v[0]));
            if (keys != nullptr) {
                keys->push_back(k);
            }
            check(it->Next(), "iterator next");
        }
        return n;
    }

  private:
    bool tree_;
    bool durable_ = false;
    std::unique_ptr<tkrzw::DBM> db_;
};

} // namespace

std::string
tkrzw_version()
{
    return tkrzw::PACKAGE_VERSION;
}

std::unique_ptr<Engine>
make_tkrzw(bool tree)
{
    return std::make_unique<Tkrzw>(tree);
}

} // namespace peers
