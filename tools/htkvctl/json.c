/*
 * json.c - the streaming JSON writer of htkvctl (see json.h).
 *
 * Invariants
 *   1. Every string written is valid JSON: '"', '\\' and control characters are escaped, and
 *      bytes that are not part of a valid UTF-8 sequence are written as \u00XX, so the output is
 *      valid UTF-8 whatever the input bytes.
 *   2. depth counts the open containers; first[depth] tells whether a comma is due.
 */
#include "tools/htkvctl/json.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void
json_indent(struct json *j)
{
    fputc('\n', j->f);
    for (unsigned i = 0; i < j->depth; i++) {
        fputs("  ", j->f);
    }
}

/* Before any value or key: the comma and the line break that the position needs. */
static void
json_sep(struct json *j)
{
    if (j->after_key) {
        j->after_key = false;
        return;
    }
    if (j->depth == 0) {
        return;
    }
    if (!j->first[j->depth]) {
        fputc(',', j->f);
    }
    j->first[j->depth] = false;
    json_indent(j);
}

void
json_init(struct json *j, FILE *f)
{
    j->f = f;
    j->depth = 0;
    j->after_key = false;
    for (unsigned i = 0; i < JSON_DEPTH_MAX; i++) {
        j->first[i] = true;
    }
}

void
json_finish(struct json *j)
{
    assert(j->depth == 0);
    fputc('\n', j->f);
    fflush(j->f);
}

static void
json_open(struct json *j, char c)
{
    json_sep(j);
    fputc(c, j->f);
    if (j->depth + 1 >= JSON_DEPTH_MAX) {
        abort(); /* a command nests deeper than JSON_DEPTH_MAX: a programming error */
    }
    j->depth++;
    j->first[j->depth] = true;
}

static void
json_close(struct json *j, char c)
{
    assert(j->depth > 0);
    bool empty = j->first[j->depth];
    j->depth--;
    if (!empty) {
        json_indent(j);
    }
    fputc(c, j->f);
}

void
json_object_begin(struct json *j)
{
    json_open(j, '{');
}

void
json_object_end(struct json *j)
{
    json_close(j, '}');
}

void
json_array_begin(struct json *j)
{
    json_open(j, '[');
}

void
json_array_end(struct json *j)
{
    json_close(j, ']');
}

/* Length of the valid UTF-8 sequence at @p s (at most @p n bytes), 0 when invalid. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    /* Reject overlong forms, surrogates and code points past U+10FFFF. */
    static const uint32_t min_cp[5] = { 0, 0, 0x80, 0x800, 0x10000 };
    if (cp < min_cp[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
        return 0;
    }
    return len;
}

void
json_string_n(struct json *j, const void *s, size_t n)
{
    const unsigned char *p = s;
    json_sep(j);
    fputc('"', j->f);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t len = utf8_len(p + i, n - i);
        if (c == '"' || c == '\\') {
            fputc('\\', j->f);
            fputc(c, j->f);
        } else if (c == '\n') {
            fputs("\\n", j->f);
        } else if (c == '\r') {
            fputs("\\r", j->f);
        } else if (c == '\t') {
            fputs("\\t", j->f);
        } else if (c < 0x20 || len == 0) {
            fprintf(j->f, "\\u%04x", c);
            len = 1;
        } else {
            fwrite(p + i, 1, len, j->f);
        }
        i += len == 0 ? 1 : len;
    }
    fputc('"', j->f);
}

void
json_string(struct json *j, const char *s)
{
    json_string_n(j, s, strlen(s));
}

void
json_key(struct json *j, const char *key)
{
    assert(j->depth > 0);
    json_string(j, key);
    fputs(": ", j->f);
    j->after_key = true;
}

void
json_u64(struct json *j, uint64_t v)
{
    json_sep(j);
    fprintf(j->f, "%" PRIu64, v);
}

void
json_i64(struct json *j, int64_t v)
{
    json_sep(j);
    fprintf(j->f, "%" PRId64, v);
}

void
json_double(struct json *j, double v)
{
    if (!isfinite(v)) {
        json_null(j);
        return;
    }
    json_sep(j);
    fprintf(j->f, "%.6g", v);
}

void
json_bool(struct json *j, bool v)
{
    json_sep(j);
    fputs(v ? "true" : "false", j->f);
}

void
json_null(struct json *j)
{
    json_sep(j);
    fputs("null", j->f);
}

void
json_kv_string(struct json *j, const char *key, const char *v)
{
    json_key(j, key);
    json_string(j, v);
}

void
json_kv_u64(struct json *j, const char *key, uint64_t v)
{
    json_key(j, key);
    json_u64(j, v);
}

void
json_kv_bool(struct json *j, const char *key, bool v)
{
    json_key(j, key);
    json_bool(j, v);
}
