/* The memory plan: every module that owns memory in a training step declares its buffers here at
 * set-up (name, elements, element size, lifetime, component, whether recompute may share it), then
 * the model allocates the whole plan at once (one arena per lifetime) and every declared pointer is
 * pointed into it. `strand train --dry-run` builds the same plan through the same declare functions
 * and only sums it, so the prediction and the allocation cannot drift apart.
 *
 * Sharing: under train.recompute = block, the model re-runs a block's forward right before its
 * backward, so the activations and scratch of one block serve every block of the same kind. A
 * module declares such buffers STRAND_PLAN_SHARED inside a group (strand_plan_group: the kind, e.g.
 * "block" or a mixer's name); the n-th shared buffer of a later group of the same kind is the n-th
 * of the first (same size, checked). Without sharing every buffer is its own. */
#ifndef STRAND_PLAN_H
#define STRAND_PLAN_H

#include "strand/common.h"

#include <stddef.h>
#include <stdint.h>

/* What a buffer holds; the dry run's columns. */
enum strand_memory_component {
    STRAND_MEM_PARAMS,       /* the flat parameter array */
    STRAND_MEM_GRADS,        /* the flat gradient array and MPI_Allreduce's scratch for it */
    STRAND_MEM_OPTIMIZER,    /* AdamW m and v */
    STRAND_MEM_ACTIVATIONS,  /* saved block activations (norms, mixer output, MLP) */
    STRAND_MEM_BLOCK_INPUTS, /* each block's input x (3 rotating buffers with train.offload) */
    STRAND_MEM_HEAD,         /* final norm, logits, probabilities, losses */
    STRAND_MEM_GRAD_SCRATCH, /* the model's backward scratch (residual, MLP and logits gradients) */
    STRAND_MEM_MIXERS,       /* mixers' own activations, scratch, tables and halo rows */
    STRAND_MEM_FFT,          /* long-convolution spectra, channel blocks, exchange staging */
    STRAND_MEM_RING,         /* ring-attention K/V and dK/dV buffers, tiles, accumulators */
    STRAND_MEM_DATA,         /* token windows, read buffer, checkpoint metadata scratch */
    STRAND_MEM_BASELINE,     /* the process without strand's buffers: libraries, MPI, HDF5, BLAS */
    STRAND_MEM_COMPONENTS
};

/* Lifetimes, one arena each. */
enum strand_lifetime {
    STRAND_LIFE_PERSISTENT, /* lives as long as the model: parameters, tables, carried state */
    STRAND_LIFE_SAVED,      /* written by forward, read by backward */
    STRAND_LIFE_SCRATCH,    /* used within one forward or backward */
    STRAND_LIFETIMES
};

/* Flags of strand_plan_add, or-ed with the lifetime. */
enum { STRAND_PLAN_SHARED = 1 << 4 };

typedef struct {
    char name[64];    /* "<owner>: <what>" */
    int64_t bytes;    /* rounded up to 64 */
    int lifetime;     /* enum strand_lifetime */
    int component;    /* enum strand_memory_component */
    int alias_of;     /* index of the entry whose memory this one shares, -1 = own */
    int group;        /* index of the group it was declared in, -1 = none */
    int shared_index; /* n for the n-th STRAND_PLAN_SHARED entry of its group, -1 = not shared */
    int64_t offset;   /* in its arena (own entries) */
    void **where;     /* the pointer to set at allocation (NULL in a dry run) */
} strand_plan_entry;

typedef struct {
    strand_plan_entry *entries;
    int count, capacity;
    int share;     /* train.recompute = block: shared entries alias the first group of their kind */
    int dry;       /* only sum: pointers are left alone and nothing is allocated */
    int component; /* of the next entries (strand_plan_component) */
    /* groups: their kind, and how many shared entries each has declared */
    struct {
        char kind[48];
        int shared_seen;
        int leader; /* first group of the same kind, or itself */
    } * groups;
    int group_count, group_capacity, current_group;
    char owner[48];    /* prefix of the next entries' names */
    int conv_strategy; /* the long convolution's strategy when one was planned (for the dry run), 0 = none */
    void *arena[STRAND_LIFETIMES];
    int64_t arena_bytes[STRAND_LIFETIMES];
} strand_plan;

/* An empty plan. dry = 1: a dry run (nothing is allocated, declared pointers are untouched). */
void strand_plan_init(strand_plan *plan, int dry, int share);
/* Declare count elements of elem_size bytes, to be pointed at by *where (a T ** cast to void *)
 * when the plan is allocated. flags = lifetime | STRAND_PLAN_SHARED. A count of 0 still gets 64
 * bytes (one allocation unit), so a declared pointer is never NULL after allocation. */
int strand_plan_add(strand_plan *plan, void *where, int64_t count, size_t elem_size, int flags,
                    const char *what);
/* STRAND_PLAN_ADD(plan, ptr, count, flags, what): ptr's own element size. */
#define STRAND_PLAN_ADD(plan, ptr, count, flags, what)                                                       \
    STRAND_CALL(strand_plan_add((plan), (void *)&(ptr), (int64_t)(count), sizeof *(ptr), (flags), (what)))
/* The component of the entries declared from now on; returns the previous one. */
int strand_plan_component(strand_plan *plan, int component);
/* Entries from now on belong to a new group of this kind (NULL kind: no group), named owner. */
int strand_plan_group(strand_plan *plan, const char *kind, const char *owner);
/* Allocate every arena and set every declared pointer (zeroed memory, 64-byte aligned). */
int strand_plan_allocate(strand_plan *plan);
/* Bytes per component (out[STRAND_MEM_COMPONENTS], added to) and in all (returned). */
int64_t strand_plan_bytes(const strand_plan *plan, int64_t *out);
/* Print one line per entry (name, bytes, lifetime, shared) to stdout; for --dry-run --verbose. */
void strand_plan_print(const strand_plan *plan);
/* Free the arenas and the entry list. */
void strand_plan_free(strand_plan *plan);

#endif
