/* engine_wiredtiger.cc - WiredTiger adapter: one row-store table "table:kv" (key_format=u,
 * value_format=u, the default table configuration) in the store's directory.
 *   - Fast rows: wiredtiger_open(dir, "create"), the default connection configuration: no log,
 *     so a write reaches the disk only at a checkpoint, and the default configuration takes
 *     none until close. A crash loses every write since the last checkpoint.
 *   - Durable rows: "create,log=(enabled=true),transaction_sync=(enabled=true,method=fsync)":
 *     every commit (each put is its own auto-commit transaction, a batch one explicit
 *     transaction) returns after the log is written and fsync'ed.
 * A WiredTiger session and its cursors serve one thread at a time: every thread that calls the
 * adapter gets its own session and cursor, opened on its first call after an open (a
 * thread_local slot tagged with the open's number) and closed with the connection. Cursors are
 * reset after each get and prefix query, so that no read keeps a page or a snapshot pinned. */
#include "engine.h"

#include <atomic>
#include <cerrno>
#include <cstring>

#include <sys/stat.h>
#include <wiredtiger.h>

namespace peers
{
namespace
{

void
check(int rc, const char *what)
{
    if (rc != 0) {
        throw std::runtime_error(std::string("wiredtiger ") + what + ": " +
                                 wiredtiger_strerror(rc));
    }
}

const char *const kTable = "table:kv";

/* A number per open, so that a thread's cached session of an earlier open is not reused. */
std::atomic<uint64_t> next_open{ 1 };

struct Session {
    uint64_t open_no = 0;
    WT_SESSION *s = nullptr;
    WT_CURSOR *c = nullptr;
};

class WiredTiger : public Engine
{
  public:
    ~WiredTiger() override
    {
        if (conn_ != nullptr) {
            (void)conn_->close(conn_, nullptr);
        }
    }

    void open(const std::string &dir, bool durable) override
    {
        if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
            throw std::runtime_error("wiredtiger: mkdir " + dir + ": " + std::strerror(errno));
        }
        const char *cfg =
            durable ? "create,log=(enabled=true),transaction_sync=(enabled=true,method=fsync)"
                    : "create";
        check(wiredtiger_open(dir.c_str(), nullptr, cfg, &conn_), "open");
        open_no_ = next_open.fetch_add(1);
        Session &s = session();
        check(s.s->create(s.s, kTable, "key_format=u,value_format=u"), "create");
    }

    void close() override
    {
        WT_CONNECTION *conn = conn_;
        conn_ = nullptr;
        open_no_ = 0;
        check(conn->close(conn, nullptr), "close"); /* closes every session, checkpoints */
    }

    void put(const void *k, size_t kl, const void *v, size_t vl) override
    {
        WT_CURSOR *c = cursor();
        WT_ITEM key = item(k, kl), val = item(v, vl);
        c->set_key(c, &key);
        c->set_value(c, &val);
        check(c->insert(c), "insert");
    }

    long get(const void *k, size_t kl, void *buf, size_t cap) override
    {
        WT_CURSOR *c = cursor();
        WT_ITEM key = item(k, kl), val;
        c->set_key(c, &key);
        int rc = c->search(c);
        if (rc == WT_NOTFOUND) {
            return -1;
        }
        check(rc, "search");
        check(c->get_value(c, &val), "get_value");
        std::memcpy(buf, val.data, val.size < cap ? val.size : cap);
        long n = static_cast<long>(val.size);
        check(c->reset(c), "reset");
        return n;
    }

    void batch_begin() override
    {
        Session &s = session();
        check(s.s->begin_transaction(s.s, nullptr), "begin_transaction");
    }

    void batch_put(const void *k, size_t kl, const void *v, size_t vl) override
    {
        put(k, kl, v, vl);
    }

    void batch_commit() override
    {
        Session &s = session();
        check(s.s->commit_transaction(s.s, nullptr), "commit_transaction");
    }

    size_t prefix(const void *p, size_t pl, uint64_t *sum, std::vector<std::string> *keys) override
    {
        WT_CURSOR *c = cursor();
        WT_ITEM pre = item(p, pl), key, val;
        c->set_key(c, &pre);
        int exact = 0;
        int rc = c->search_near(c, &exact);
        if (rc == 0 && exact < 0) {
            rc = c->next(c);
        }
        size_t n = 0;
        for (; rc == 0; rc = c->next(c)) {
            check(c->get_key(c, &key), "get_key");
            if (key.size < pl || std::memcmp(key.data, p, pl) != 0) {
                break;
            }
            check(c->get_value(c, &val), "get_value");
            n++;
            *sum += val.size + (val.size > 0 ? static_cast<const unsigned char *>(val.data)[0] : 0);
            if (keys != nullptr) {
                keys->emplace_back(static_cast<const char *>(key.data), key.size);
            }
        }
        if (rc != 0 && rc != WT_NOTFOUND) {
            check(rc, "cursor");
        }
        check(c->reset(c), "reset");
        return n;
    }

  private:
    static WT_ITEM item(const void *d, size_t n)
    {
        WT_ITEM it;
        std::memset(&it, 0, sizeof(it));
        it.data = d;
        it.size = n;
        return it;
    }

    /* The calling thread's session of this open. */
    Session &session()
    {
        thread_local Session mine;
        if (mine.open_no != open_no_) {
            mine = Session{};
            check(conn_->open_session(conn_, nullptr, nullptr, &mine.s), "open_session");
            mine.open_no = open_no_;
        }
        return mine;
    }

    WT_CURSOR *cursor()
    {
        Session &s = session();
        if (s.c == nullptr) {
            check(s.s->open_cursor(s.s, kTable, nullptr, nullptr, &s.c), "open_cursor");
        }
        return s.c;
    }

    WT_CONNECTION *conn_ = nullptr;
    uint64_t open_no_ = 0;
};

} // namespace

std::string
wiredtiger_version()
{
    int major = 0, minor = 0, patch = 0;
    (void)::wiredtiger_version(&major, &minor, &patch);
    return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

std::unique_ptr<Engine>
make_wiredtiger()
{
    return std::make_unique<WiredTiger>();
}

} // namespace peers
