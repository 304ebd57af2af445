/*
 * json.h - a tiny streaming JSON writer for htkvctl --json: objects, arrays, strings (escaped per
 * RFC 8259), integers, doubles, booleans and null, pretty-printed with two-space indentation.
 *
 * The writer tracks nesting so that commas and indentation are always right; it does not check
 * that keys and values alternate (the commands are simple enough to get that right).
 */
#ifndef HTKV_TOOLS_HTKVCTL_JSON_H
#define HTKV_TOOLS_HTKVCTL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Deepest nesting: the commands use 3 levels; 16 leaves room. */
#define JSON_DEPTH_MAX 16

struct json {
    FILE *f;
    unsigned depth;
    bool first[JSON_DEPTH_MAX]; /* no member written yet at this depth */
    bool after_key;             /* a key was written: the value follows on the same line */
};

/** Start writing one document to @p f. */
void json_init(struct json *j, FILE *f);
/** End the document (writes the final newline). */
void json_finish(struct json *j);

void json_object_begin(struct json *j);
void json_object_end(struct json *j);
void json_array_begin(struct json *j);
void json_array_end(struct json *j);

/** Write a member name; the next call writes its value. */
void json_key(struct json *j, const char *key);

/** A string of @p n bytes: valid UTF-8 is copied, other bytes are written as \u00XX. */
void json_string_n(struct json *j, const void *s, size_t n);
void json_string(struct json *j, const char *s);
void json_u64(struct json *j, uint64_t v);
void json_i64(struct json *j, int64_t v);
/** A finite double with up to 6 significant decimals; NaN and infinities become null. */
void json_double(struct json *j, double v);
void json_bool(struct json *j, bool v);
void json_null(struct json *j);

/* key + value shorthands */
void json_kv_string(struct json *j, const char *key, const char *v);
void json_kv_u64(struct json *j, const char *key, uint64_t v);
void json_kv_bool(struct json *j, const char *key, bool v);

#endif /* HTKV_TOOLS_HTKVCTL_JSON_H */
