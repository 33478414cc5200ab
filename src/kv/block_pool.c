#include "kv/block_pool.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"

typedef struct {
    int32_t ref;
    int32_t prev, next;  /* free-queue links (-1: none); only meaningful while ref == 0 */
    int32_t hash_next;   /* next block in the same hash bucket */
    uint8_t published;   /* in the hash index */
    int32_t adapter;     /* adapter id the published block's K/V were computed with */
    uint64_t hash, parent_hash;
} block_meta;

struct kv_pool {
    int32_t n_blocks, block_size;
    block_meta *b;       /* [n_blocks] */
    int32_t *tokens;     /* [n_blocks][block_size] tokens of published blocks (to verify hits) */
    int32_t head, tail;  /* free queue: alloc takes from head */
    int32_t n_free, n_cached;
    int32_t *buckets;    /* [n_buckets] first block of each hash chain, -1 empty */
    uint32_t bucket_mask;
};

pagoda_status kv_pool_create(int32_t n_blocks, int32_t block_size, kv_pool **out) {
    *out = NULL;
    if (n_blocks <= 0 || block_size <= 0 || n_blocks > (1 << 26) || block_size > 4096)
        return pg_fail(PAGODA_ERR_INVALID, "kv pool: %d blocks of %d tokens is out of range", n_blocks, block_size);
    kv_pool *p = calloc(1, sizeof *p);
    if (!p) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    uint32_t nb = 16;
    while (nb < 2u * (uint32_t)n_blocks) nb <<= 1;
    p->n_blocks = n_blocks, p->block_size = block_size, p->bucket_mask = nb - 1;
    p->b = calloc((size_t)n_blocks, sizeof *p->b);
    p->tokens = malloc((size_t)n_blocks * (size_t)block_size * sizeof(int32_t));
    p->buckets = malloc(nb * sizeof(int32_t));
    if (!p->b || !p->tokens || !p->buckets) {
        kv_pool_destroy(p);
        return pg_fail(PAGODA_ERR_NOMEM, "kv pool: out of memory");
    }
    memset(p->buckets, 0xff, nb * sizeof(int32_t));
    for (int32_t i = 0; i < n_blocks; i++) {
        p->b[i].prev = i - 1;
        p->b[i].next = i + 1 < n_blocks ? i + 1 : -1;
        p->b[i].hash_next = -1;
    }
    p->head = 0, p->tail = n_blocks - 1, p->n_free = n_blocks;
    *out = p;
    return PAGODA_OK;
}

void kv_pool_destroy(kv_pool *p) {
    if (!p) return;
    free(p->b), free(p->tokens), free(p->buckets), free(p);
}

int32_t kv_pool_n_blocks(const kv_pool *p) { return p->n_blocks; }
int32_t kv_pool_block_size(const kv_pool *p) { return p->block_size; }
int32_t kv_pool_n_free(const kv_pool *p) { return p->n_free; }
int32_t kv_pool_n_cached(const kv_pool *p) { return p->n_cached; }
int32_t kv_pool_ref_count(const kv_pool *p, int32_t b) { return p->b[b].ref; }

static void queue_remove(kv_pool *p, int32_t i) {
    block_meta *m = &p->b[i];
    if (m->prev >= 0) p->b[m->prev].next = m->next; else p->head = m->next;
    if (m->next >= 0) p->b[m->next].prev = m->prev; else p->tail = m->prev;
    m->prev = m->next = -1;
    p->n_free--;
}

static void queue_push_tail(kv_pool *p, int32_t i) {
    block_meta *m = &p->b[i];
    m->next = -1, m->prev = p->tail;
    if (p->tail >= 0) p->b[p->tail].next = i; else p->head = i;
    p->tail = i;
    p->n_free++;
}

static void queue_push_head(kv_pool *p, int32_t i) {
    block_meta *m = &p->b[i];
    m->prev = -1, m->next = p->head;
    if (p->head >= 0) p->b[p->head].prev = i; else p->tail = i;
    p->head = i;
    p->n_free++;
}

static void unpublish(kv_pool *p, int32_t i) {
    int32_t *link = &p->buckets[p->b[i].hash & p->bucket_mask];
    while (*link != i) link = &p->b[*link].hash_next;
    *link = p->b[i].hash_next;
    p->b[i].hash_next = -1;
    p->b[i].published = 0;
}

int32_t kv_pool_alloc(kv_pool *p) {
    int32_t i = p->head;
    if (i < 0) return -1;
    queue_remove(p, i);
    if (p->b[i].published) { /* evicting a cached prefix */
        unpublish(p, i);
        p->n_cached--;
    }
    p->b[i].ref = 1;
    return i;
}

void kv_pool_ref(kv_pool *p, int32_t b) {
    if (p->b[b].ref++ == 0) {
        queue_remove(p, b);
        if (p->b[b].published) p->n_cached--;
    }
}

void kv_pool_unref(kv_pool *p, int32_t b) {
    if (--p->b[b].ref > 0) return;
    if (p->b[b].published) { /* keep the prefix around as long as possible */
        queue_push_tail(p, b);
        p->n_cached++;
    } else {
        queue_push_head(p, b);
    }
}

uint64_t kv_block_hash(uint64_t parent_hash, const int32_t *tokens, int32_t n) {
    /* splitmix64-style mixing of each token into the running state */
    uint64_t h = parent_hash ^ 0x94d049bb133111ebull;
    for (int32_t i = 0; i < n; i++) {
        h ^= (uint64_t)(uint32_t)tokens[i] + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
        h ^= h >> 30, h *= 0xbf58476d1ce4e5b9ull, h ^= h >> 27, h *= 0x94d049bb133111ebull, h ^= h >> 31;
    }
    return h;
}

uint64_t kv_root_hash(int32_t adapter) {
    if (adapter == 0) return KV_ROOT_HASH;
    uint64_t h = KV_ROOT_HASH ^ ((uint64_t)(uint32_t)adapter * 0xbf58476d1ce4e5b9ull);
    h ^= h >> 31, h *= 0x94d049bb133111ebull, h ^= h >> 29;
    return h == KV_ROOT_HASH ? h + 1 : h;
}

int32_t kv_pool_lookup(const kv_pool *p, uint64_t hash, uint64_t parent_hash, int32_t adapter, const int32_t *tokens) {
    for (int32_t i = p->buckets[hash & p->bucket_mask]; i >= 0; i = p->b[i].hash_next) {
        const block_meta *m = &p->b[i];
        if (m->hash == hash && m->parent_hash == parent_hash && m->adapter == adapter &&
            !memcmp(p->tokens + (size_t)i * (size_t)p->block_size, tokens, (size_t)p->block_size * sizeof(int32_t)))
            return i;
    }
    return -1;
}

void kv_pool_publish(kv_pool *p, int32_t b, uint64_t hash, uint64_t parent_hash, int32_t adapter, const int32_t *tokens) {
    if (p->b[b].published || kv_pool_lookup(p, hash, parent_hash, adapter, tokens) >= 0) return;
    block_meta *m = &p->b[b];
    m->published = 1, m->hash = hash, m->parent_hash = parent_hash, m->adapter = adapter;
    memcpy(p->tokens + (size_t)b * (size_t)p->block_size, tokens, (size_t)p->block_size * sizeof(int32_t));
    int32_t *bucket = &p->buckets[hash & p->bucket_mask];
    m->hash_next = *bucket;
    *bucket = b;
    if (m->ref == 0) p->n_cached++; /* only referenced blocks are published by the scheduler, but be exact */
}

int32_t kv_pool_flush(kv_pool *p) {
    int32_t n = 0;
    for (int32_t i = 0; i < p->n_blocks; i++) {
        if (!p->b[i].published) continue;
        unpublish(p, i);
        n++;
        if (p->b[i].ref == 0) { /* a cached prefix: now a plain free block, reused first */
            p->n_cached--;
            queue_remove(p, i);
            queue_push_head(p, i);
        }
    }
    return n;
}

int kv_pool_block_published(const kv_pool *p, int32_t b, uint64_t *hash, const int32_t **tokens) {
    if (b < 0 || b >= p->n_blocks || !p->b[b].published) return 0;
    *hash = p->b[b].hash;
    *tokens = p->tokens + (size_t)b * (size_t)p->block_size;
    return 1;
}

int kv_pool_check(const kv_pool *p) {
    int32_t n = 0, n_cached = 0, prev = -1;
    for (int32_t i = p->head; i >= 0; prev = i, i = p->b[i].next) {
        if (++n > p->n_blocks) return pg_fail(PAGODA_ERR_INVALID, "kv pool: free queue has a cycle"), -1;
        if (p->b[i].ref != 0) return pg_fail(PAGODA_ERR_INVALID, "kv pool: block %d on the free queue has ref %d", i, p->b[i].ref), -1;
        if (p->b[i].prev != prev) return pg_fail(PAGODA_ERR_INVALID, "kv pool: block %d has a broken prev link", i), -1;
        n_cached += p->b[i].published;
    }
    if (prev != p->tail) return pg_fail(PAGODA_ERR_INVALID, "kv pool: free queue tail is wrong"), -1;
    int32_t n_unref = 0;
    for (int32_t i = 0; i < p->n_blocks; i++) {
        if (p->b[i].ref < 0) return pg_fail(PAGODA_ERR_INVALID, "kv pool: block %d has ref %d", i, p->b[i].ref), -1;
        n_unref += p->b[i].ref == 0;
    }
    if (n != p->n_free || n != n_unref)
        return pg_fail(PAGODA_ERR_INVALID, "kv pool: %d blocks on the free queue, counter says %d, %d unreferenced", n,
                       p->n_free, n_unref), -1;
    if (n_cached != p->n_cached)
        return pg_fail(PAGODA_ERR_INVALID, "kv pool: %d cached blocks, counter says %d", n_cached, p->n_cached), -1;
    int32_t n_pub = 0;
    for (uint32_t k = 0; k <= p->bucket_mask; k++)
        for (int32_t i = p->buckets[k]; i >= 0; i = p->b[i].hash_next) {
            if (!p->b[i].published || (p->b[i].hash & p->bucket_mask) != k)
                return pg_fail(PAGODA_ERR_INVALID, "kv pool: hash index holds block %d wrongly", i), -1;
            if (++n_pub > p->n_blocks) return pg_fail(PAGODA_ERR_INVALID, "kv pool: hash chain cycle"), -1;
        }
    for (int32_t i = 0; i < p->n_blocks; i++) n_pub -= p->b[i].published;
    if (n_pub) return pg_fail(PAGODA_ERR_INVALID, "kv pool: published flags and hash index disagree"), -1;
    return 0;
}
