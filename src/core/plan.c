/* The memory plan (see plan.h): a list of declared buffers, then one allocation per lifetime. */
#include "strand/plan.h"

#include <stdio.h>
#include <string.h>

static int64_t rounded(int64_t bytes) {
    const int64_t r = (bytes + 63) / 64 * 64;
    return r > 0 ? r : 64;
}

void strand_plan_init(strand_plan *plan, int dry, int share) {
    memset(plan, 0, sizeof *plan);
    plan->dry = dry;
    plan->share = share;
    plan->current_group = -1;
    plan->component = STRAND_MEM_MIXERS;
}

int strand_plan_component(strand_plan *plan, int component) {
    const int previous = plan->component;
    plan->component = component;
    return previous;
}

int strand_plan_group(strand_plan *plan, const char *kind, const char *owner) {
    snprintf(plan->owner, sizeof plan->owner, "%s", owner ? owner : "");
    if (!kind) {
        plan->current_group = -1;
        return STRAND_OK;
    }
    if (plan->group_count == plan->group_capacity) {
        const int capacity = plan->group_capacity ? 2 * plan->group_capacity : 16;
        void *groups = strand_alloc(sizeof *plan->groups * (size_t)capacity, "memory plan groups");
        if (!groups) return STRAND_ERR_NOMEM;
        if (plan->groups) memcpy(groups, plan->groups, sizeof *plan->groups * (size_t)plan->group_count);
        strand_free(plan->groups);
        plan->groups = groups;
        plan->group_capacity = capacity;
    }
    const int g = plan->group_count++;
    snprintf(plan->groups[g].kind, sizeof plan->groups[g].kind, "%s", kind);
    plan->groups[g].shared_seen = 0;
    plan->groups[g].leader = g;
    for (int k = 0; k < g; k++)
        if (strcmp(plan->groups[k].kind, kind) == 0) {
            plan->groups[g].leader = k;
            break;
        }
    plan->current_group = g;
    return STRAND_OK;
}

int strand_plan_add(strand_plan *plan, void *where, int64_t count, size_t elem_size, int flags,
                    const char *what) {
    if (count < 0)
        STRAND_FAIL(STRAND_ERR_INTERNAL, "memory plan: %s has %lld elements", what, (long long)count);
    if (plan->count == plan->capacity) {
        const int capacity = plan->capacity ? 2 * plan->capacity : 128;
        strand_plan_entry *entries = strand_alloc(sizeof *entries * (size_t)capacity, "memory plan");
        if (!entries) return STRAND_ERR_NOMEM;
        if (plan->entries) memcpy(entries, plan->entries, sizeof *entries * (size_t)plan->count);
        strand_free(plan->entries);
        plan->entries = entries;
        plan->capacity = capacity;
    }
    strand_plan_entry *e = &plan->entries[plan->count];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s%s%s", plan->owner, plan->owner[0] ? ": " : "", what);
    e->bytes = rounded(count * (int64_t)elem_size);
    e->lifetime = flags & ~STRAND_PLAN_SHARED;
    e->shared_index = -1;
    e->component = plan->component;
    e->alias_of = -1;
    e->group = plan->current_group;
    e->where = plan->dry ? NULL : (void **)where;
    if ((flags & STRAND_PLAN_SHARED) && plan->current_group >= 0) {
        const int g = plan->current_group, leader = plan->groups[g].leader;
        e->shared_index = plan->groups[g].shared_seen++;
        if (plan->share && leader != g) {
            /* The same shared entry of the first group of this kind; its lifetime is unchanged. */
            int found = -1;
            for (int i = 0; i < plan->count && found < 0; i++)
                if (plan->entries[i].group == leader && plan->entries[i].shared_index == e->shared_index)
                    found = i;
            if (found < 0 || plan->entries[found].bytes != e->bytes)
                STRAND_FAIL(STRAND_ERR_INTERNAL,
                            "memory plan: %s cannot share the buffers of the first %s (sizes differ)",
                            e->name, plan->groups[g].kind);
            e->alias_of = found;
        }
    }
    plan->count++;
    return STRAND_OK;
}

int strand_plan_allocate(strand_plan *plan) {
    STRAND_ASSERT(!plan->dry);
    int64_t used[STRAND_LIFETIMES] = {0};
    for (int i = 0; i < plan->count; i++) {
        strand_plan_entry *e = &plan->entries[i];
        if (e->alias_of >= 0) continue;
        e->offset = used[e->lifetime];
        used[e->lifetime] += e->bytes;
    }
    for (int l = 0; l < STRAND_LIFETIMES; l++) {
        static const char *const names[STRAND_LIFETIMES] = {"persistent buffers", "saved activations",
                                                            "scratch buffers"};
        plan->arena_bytes[l] = used[l];
        if (used[l] == 0) continue;
        plan->arena[l] = strand_alloc((size_t)used[l], names[l]);
        if (!plan->arena[l]) return STRAND_ERR_NOMEM;
    }
    for (int i = 0; i < plan->count; i++) {
        const strand_plan_entry *e = &plan->entries[i];
        const strand_plan_entry *own = e->alias_of >= 0 ? &plan->entries[e->alias_of] : e;
        if (e->where) *e->where = (char *)plan->arena[own->lifetime] + own->offset;
    }
    return STRAND_OK;
}

int64_t strand_plan_bytes(const strand_plan *plan, int64_t *out) {
    int64_t total = 0;
    for (int i = 0; i < plan->count; i++) {
        const strand_plan_entry *e = &plan->entries[i];
        if (e->alias_of >= 0) continue;
        if (out) out[e->component] += e->bytes;
        total += e->bytes;
    }
    return total;
}

void strand_plan_print(const strand_plan *plan) {
    static const char *const lives[STRAND_LIFETIMES] = {"persistent", "saved", "scratch"};
    for (int i = 0; i < plan->count; i++) {
        const strand_plan_entry *e = &plan->entries[i];
        printf("plan: %-56s %14lld bytes  %-10s%s%s\n", e->name, (long long)e->bytes, lives[e->lifetime],
               e->alias_of >= 0 ? "  = " : "", e->alias_of >= 0 ? plan->entries[e->alias_of].name : "");
    }
}

void strand_plan_free(strand_plan *plan) {
    for (int l = 0; l < STRAND_LIFETIMES; l++)
        strand_free(plan->arena[l]);
    strand_free(plan->entries);
    strand_free(plan->groups);
    memset(plan, 0, sizeof *plan);
    plan->current_group = -1;
}
