/* engine_htkv.cc - htkv adapter: default configuration (htkv_config_init), HTKV_SYNC_INTERVAL
 * (the default) for the fast rows, HTKV_SYNC_ALWAYS for the durable ones. */
#include "engine.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow" /* htkv_stats(): function and struct, in C++ */
#include <htkv/htkv.h>
#pragma GCC diagnostic pop

namespace peers
{
namespace
{

[[noreturn]] void
fail(const char *what, int rc)
{
    throw std::runtime_error(std::string("htkv ") + what + ": " + htkv_strerror(rc) + " " +
                             htkv_last_error());
}

class Htkv : public Engine
{
  public:
    explicit Htkv(int workers) : workers_(workers)
    {
    }
    ~Htkv() override
    {
        htkv_batch_destroy(batch_);
        if (db_ != nullptr) {
            (void)htkv_close(db_);
        }
    }

    void open(const std::string &dir, bool durable) override
    {
        htkv_config cfg;
        htkv_config_init(&cfg);
        cfg.data_dir = dir.c_str();
        if (workers_ >= 0) {
            cfg.worker_threads = static_cast<unsigned>(workers_);
        }
        cfg.sync_mode = durable ? HTKV_SYNC_ALWAYS : HTKV_SYNC_INTERVAL;
        cfg.memory_budget_bytes = budget_;
        int rc = htkv_open(&cfg, &db_);
        if (rc != 0) {
            fail("open", rc);
        }
    }

    void close() override
    {
        htkv_db *db = db_;
        db_ = nullptr;
        int rc = htkv_close(db);
        if (rc != 0) {
            fail("close", rc);
        }
    }

    void put(const void *k, size_t kl, const void *v, size_t vl) override
    {
        int rc = htkv_put(db_, k, kl, v, vl);
        if (rc != 0) {
            fail("put", rc);
        }
    }

    long get(const void *k, size_t kl, void *buf, size_t cap) override
    {
        size_t vl = 0;
        int rc = htkv_get(db_, k, kl, buf, cap, &vl);
        if (rc == HTKV_ENOTFOUND) {
            return -1;
        }
        if (rc != 0) {
            fail("get", rc);
        }
        return static_cast<long>(vl);
    }

    void batch_begin() override
    {
        if (batch_ == nullptr) {
            int rc = htkv_batch_create(&batch_);
            if (rc != 0) {
                fail("batch_create", rc);
            }
        }
        htkv_batch_clear(batch_);
    }

    void batch_put(const void *k, size_t kl, const void *v, size_t vl) override
    {
        int rc = htkv_batch_put(batch_, k, kl, v, vl);
        if (rc != 0) {
            fail("batch_put", rc);
        }
    }

    void batch_commit() override
    {
        int rc = htkv_write(db_, batch_);
        if (rc != 0) {
            fail("write", rc);
        }
    }

    size_t prefix(const void *p, size_t pl, uint64_t *sum, std::vector<std::string> *keys) override
    {
        htkv_iter *it = nullptr;
        int rc = htkv_get_prefix(db_, p, pl, &it);
        if (rc != 0) {
            fail("get_prefix", rc);
        }
        const void *k, *v;
        size_t kl, vl, n = 0;
        while ((rc = htkv_iter_next(it, &k, &kl, &v, &vl)) == 1) {
            n++;
            *sum += vl + (vl > 0 ? static_cast<const unsigned char *>(v)[0] : 0);
            if (keys != nullptr) {
                keys->emplace_back(static_cast<const char *>(k), kl);
            }
        }
        htkv_iter_destroy(it);
        if (rc != 0) {
            fail("iter_next", rc);
        }
        return n;
    }

    void bound_memory(uint64_t bytes) override
    {
        budget_ = bytes;
    }

  private:
    int workers_;
    uint64_t budget_ = 0;
    htkv_db *db_ = nullptr;
    htkv_batch *batch_ = nullptr;
};

} // namespace

std::unique_ptr<Engine>
make_htkv(int workers)
{
    return std::make_unique<Htkv>(workers);
}

} // namespace peers
