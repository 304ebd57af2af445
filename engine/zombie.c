/*
 * zombie.c - segments that compaction dropped while open views may still read them (store layer).
 *
 * A dropped segment goes to EBR at once when no view is open; otherwise it becomes a zombie on
 * the store's list (views.lock) with the view generation of its drop, and is handed to EBR once
 * every view that predates the drop has closed (views with a gen <= the zombie's may read it).
 *
 * Invariants
 *   1. The list is changed only under views.lock.
 *   2. A zombie's segment stays mapped until no open view has gen <= zombie->gen.
 * May call: the shard (shard.h) and the store's fields (store.h).
 */
#include "engine/zombie.h"

#include "engine/store.h"

void
htkv_zombie_retire(struct htkv_db *db, struct shard *sh, struct seg *s, struct zombie *z)
{
    if (db->views.open == 0 && htkv_shard_limbo_reserve(sh, 1) == 0) {
        htkv_mem_free(z);
        htkv_shard_retire_seg(sh, s);
        return;
    }
    /* A view may read it, or no memory to retire it now: kept as a zombie, released when views
     * close or by the compactor (htkv_zombie_release()). */
    *z = (struct zombie){
        .seg = s, .shard = sh->id, .gen = db->views.gen, .next = db->views.zombies
    };
    db->views.zombies = z;
}

void
htkv_zombie_release(struct htkv_db *db, uint64_t min_gen)
{
    struct zombie **pp = &db->views.zombies;
    while (*pp != NULL) {
        struct zombie *z = *pp;
        if (z->gen >= min_gen) {
            pp = &z->next;
            continue;
        }
        struct shard *sh = db_shard(db, z->shard);
        pthread_mutex_lock(&sh->lock);
        bool room = htkv_shard_limbo_reserve(sh, 1) == 0;
        if (room) {
            htkv_shard_retire_seg(sh, z->seg);
        }
        pthread_mutex_unlock(&sh->lock);
        if (!room) {
            pp = &z->next; /* no memory: it waits for a later release, or the close */
            continue;
        }
        *pp = z->next;
        htkv_mem_free(z);
    }
}

void
htkv_zombie_free_all(struct htkv_db *db)
{
    while (db->views.zombies != NULL) {
        struct zombie *z = db->views.zombies;
        db->views.zombies = z->next;
        htkv_seg_close(z->seg);
        htkv_mem_free(z);
    }
}
