/*
 * cmd.c - htkv-node's line protocol: one command line in, one answer line out.
 *
 *     put K V   -> OK <version>                    (V: the rest of the line, may hold spaces)
 *     del K     -> OK <version> | NOTFOUND
 *     get K     -> VALUE <version> <value> | NOTFOUND   (linearizable: on the leader only)
 *     lget K    -> VALUE <version> <value> | NOTFOUND   (this member's store, maybe stale)
 *     status    -> STATUS id=.. role=.. term=.. commit=.. applied=.. last=.. version=..
 *                  ready=0|1 leader=<id>@<address> members=<id>@<address>/<voter|spare>/<match>,..
 *     add ID ADDR   -> OK (member ID at ADDR added, a voter once caught up; on the leader)
 *     remove ID     -> OK (member ID removed; on the leader)
 *     transfer [ID] -> OK <new leader id> (leadership handed to ID, or to a voter raft picks)
 *     quit      -> BYE (the member stops)
 *   and, for any of them, NOTLEADER <id> <address> (id 0 and address "-" when no leader is
 *   known) or ERR <code> <text> (code: the negative htkv/errno code, text: htkv_strerror()).
 *
 * Invariants
 *   1. Exactly one answer line per command, '\n'-terminated, within the caller's buffer: a
 *      value that does not fit is refused (ERR HTKV_ETOOBIG) rather than cut.
 *   2. A key is one word (no spaces); words are separated by single spaces.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/htkv-node/node.h"

/* Largest value this protocol carries: what fits in an answer line. */
#define CMD_VALUE_MAX (NODE_LINE_MAX - 16)

static int
answer_error(char *answer, size_t cap, int rc, const struct htkv_cluster_leader *leader)
{
    if (rc == HTKV_ENOTLEADER && leader != NULL) {
        snprintf(answer, cap, "NOTLEADER %" PRIu64 " %s\n", leader->id,
                 leader->id != 0 && leader->address[0] != '\0' ? leader->address : "-");
    } else if (rc == HTKV_ENOTFOUND) {
        snprintf(answer, cap, "NOTFOUND\n");
    } else {
        snprintf(answer, cap, "ERR %d %s\n", rc, htkv_strerror(rc));
    }
    return 0;
}

static int
answer_usage(char *answer, size_t cap, const char *what)
{
    snprintf(answer, cap, "ERR %d %s\n", -EINVAL, what);
    return 0;
}

/* The value of a get: "VALUE <version> " then the bytes, written in place in the answer. */
static int
cmd_read(htkv_cluster *c, const char *key, int local, char *answer, size_t cap)
{
    char head[48];
    size_t room = cap - sizeof(head) - 2;
    char *val = answer + sizeof(head);
    size_t vlen = 0;
    uint64_t version = 0;
    struct htkv_cluster_leader leader = { 0 };
    int rc;
    if (local) {
        rc = htkv_cluster_get_local(c, key, strlen(key), val, room, &vlen, &version, NULL);
    } else {
        rc = htkv_cluster_get(c, key, strlen(key), val, room, &vlen, &version, &leader);
    }
    if (rc == HTKV_ETOOSMALL) {
        rc = HTKV_ETOOBIG;
    }
    if (rc != 0) {
        return answer_error(answer, cap, rc, &leader);
    }
    int hl = snprintf(head, sizeof(head), "VALUE %" PRIu64 " ", version);
    memmove(answer + hl, val, vlen);
    memcpy(answer, head, (size_t)hl);
    answer[(size_t)hl + vlen] = '\n';
    answer[(size_t)hl + vlen + 1] = '\0';
    return 0;
}

static int
cmd_write(htkv_cluster *c, const char *key, const char *val, char *answer, size_t cap)
{
    uint64_t version = 0;
    struct htkv_cluster_leader leader = { 0 };
    int rc;
    if (val != NULL) {
        if (strlen(val) > CMD_VALUE_MAX) {
            return answer_error(answer, cap, HTKV_ETOOBIG, NULL);
        }
        rc = htkv_cluster_put(c, key, strlen(key), val, strlen(val), &version, &leader);
    } else {
        rc = htkv_cluster_delete(c, key, strlen(key), &version, &leader);
    }
    if (rc != 0) {
        return answer_error(answer, cap, rc, &leader);
    }
    snprintf(answer, cap, "OK %" PRIu64 "\n", version);
    return 0;
}

static const char *
role_name(int role)
{
    switch (role) {
    case HTKV_CLUSTER_FOLLOWER:
        return "follower";
    case HTKV_CLUSTER_CANDIDATE:
        return "candidate";
    case HTKV_CLUSTER_LEADER:
        return "leader";
    default:
        return "unavailable";
    }
}

static int
cmd_status(htkv_cluster *c, char *answer, size_t cap)
{
    struct htkv_cluster_status st;
    int rc = htkv_cluster_status(c, &st);
    if (rc != 0 && rc != HTKV_EFAILED) {
        return answer_error(answer, cap, rc, NULL);
    }
    int n = snprintf(answer, cap,
                     "STATUS id=%" PRIu64 " role=%s term=%" PRIu64 " commit=%" PRIu64
                     " applied=%" PRIu64 " last=%" PRIu64 " version=%" PRIu64
                     " ready=%d leader=%" PRIu64 "@%s members=",
                     st.id, role_name(st.role), st.term, st.commit_index, st.applied_index,
                     st.last_index, st.store_version, st.leader_ready, st.leader.id,
                     st.leader.address[0] != '\0' ? st.leader.address : "-");
    for (size_t i = 0; i < st.member_count && n > 0 && (size_t)n < cap; i++) {
        n += snprintf(answer + n, cap - (size_t)n, "%s%" PRIu64 "@%s/%s/%" PRIu64, i > 0 ? "," : "",
                      st.members[i].id, st.members[i].address,
                      st.members[i].voter ? "voter" : "spare", st.members[i].match_index);
    }
    if (n > 0 && (size_t)n < cap) {
        snprintf(answer + n, cap - (size_t)n, "\n");
    }
    return 0;
}

/* A node id word: 1 or more; 0 when it is not one. */
static uint64_t
parse_id(const char *s)
{
    char *end = NULL;
    if (s == NULL || s[0] < '0' || s[0] > '9') {
        return 0;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    return errno == 0 && *end == '\0' ? (uint64_t)v : 0;
}

/* add ID ADDR, remove ID, transfer [ID]: membership on the leader. */
static int
cmd_member(htkv_cluster *c, const char *verb, const char *id_word, const char *addr, char *answer,
           size_t cap)
{
    struct htkv_cluster_leader leader = { 0 };
    uint64_t id = parse_id(id_word);
    int rc;
    if (verb[0] == 'a') {
        if (id == 0 || addr == NULL || strchr(addr, ' ') != NULL) {
            return answer_usage(answer, cap, "usage: add ID HOST:PORT");
        }
        rc = htkv_cluster_add(c, id, addr, &leader);
    } else if (verb[0] == 'r') {
        if (id == 0 || addr != NULL) {
            return answer_usage(answer, cap, "usage: remove ID");
        }
        rc = htkv_cluster_remove(c, id, &leader);
    } else {
        if ((id_word != NULL && id == 0) || addr != NULL) {
            return answer_usage(answer, cap, "usage: transfer [ID]");
        }
        rc = htkv_cluster_transfer(c, id, &leader);
        if (rc == 0) {
            snprintf(answer, cap, "OK %" PRIu64 "\n", leader.id);
            return 0;
        }
    }
    if (rc != 0) {
        return answer_error(answer, cap, rc, &leader);
    }
    snprintf(answer, cap, "OK\n");
    return 0;
}

/* Split "VERB[ KEY[ REST]]" in place. */
static void
split(char *line, char **verb, char **key, char **rest)
{
    *verb = line;
    *key = NULL;
    *rest = NULL;
    char *sp = strchr(line, ' ');
    if (sp == NULL) {
        return;
    }
    *sp = '\0';
    *key = sp + 1;
    sp = strchr(*key, ' ');
    if (sp != NULL) {
        *sp = '\0';
        *rest = sp + 1;
    }
}

int
node_command(htkv_cluster *c, char *line, char *answer, size_t cap)
{
    char *verb, *key, *rest;
    size_t n = strlen(line);
    if (n > 0 && line[n - 1] == '\r') {
        line[n - 1] = '\0';
    }
    split(line, &verb, &key, &rest);
    int has_key = key != NULL && key[0] != '\0';
    if (strcmp(verb, "quit") == 0 && key == NULL) {
        snprintf(answer, cap, "BYE\n");
        return 1;
    }
    if (strcmp(verb, "status") == 0 && key == NULL) {
        return cmd_status(c, answer, cap);
    }
    if (strcmp(verb, "put") == 0) {
        return has_key && rest != NULL ? cmd_write(c, key, rest, answer, cap)
                                       : answer_usage(answer, cap, "usage: put KEY VALUE");
    }
    if (strcmp(verb, "del") == 0) {
        return has_key && rest == NULL ? cmd_write(c, key, NULL, answer, cap)
                                       : answer_usage(answer, cap, "usage: del KEY");
    }
    if (strcmp(verb, "get") == 0 || strcmp(verb, "lget") == 0) {
        return has_key && rest == NULL ? cmd_read(c, key, verb[0] == 'l', answer, cap)
                                       : answer_usage(answer, cap, "usage: get|lget KEY");
    }
    if (strcmp(verb, "add") == 0 || strcmp(verb, "remove") == 0 || strcmp(verb, "transfer") == 0) {
        return cmd_member(c, verb, key, rest, answer, cap);
    }
    return answer_usage(answer, cap,
                        "unknown command (put K V, get K, lget K, del K, status, add ID ADDR, "
                        "remove ID, transfer [ID], quit)");
}
