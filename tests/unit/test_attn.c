/* Ring attention and the "attn" mixer at 1-4 ranks.
 *
 * 1. Kernel: output, log-sum-exp and the gradients of Q, K, V equal naive attention computed in
 *    double on the whole window, for contiguous and zigzag layouts, uneven shards, GQA, sliding
 *    windows and a segment-memory block, with small and default tiles.
 * 2. Mixer: forward equals projections + RoPE + naive attention on the gathered window (with and
 *    without segment memory); finite differences of a global (all-reduced) loss for every
 *    parameter and the input.
 * 3. Config errors: heads that do not divide d_model, kv_heads that do not divide heads. */
#include "gradcheck.h"
#include "test_util.h"

#include "strand/config.h"
#include "strand/dist.h"
#include "strand/model.h"
#include "kernels/ring_attn.h"

#include <stdlib.h>
#include <string.h>

#ifdef STRAND_REAL_DOUBLE
#define EXACT_TOL 1e-10
#define MIXER_OK(res) gradcheck_ok((res), GRADCHECK_TOL)
#define MIXER_FLOOR 1e-2
#else
#define EXACT_TOL 1e-4
/* Float central differences are noisy per element; the norm-wise error still exposes a wrong
 * backward (it is then O(1)). */
#define MIXER_OK(res) ((res).checked > 0 && (res).norm_rel < 1e-2)
#define MIXER_FLOOR GRADCHECK_FLOOR
#endif

static int world_rank = 0, world_size = 1;

/* Value at global (row, column) of a named random array: the same on every rank. */
static double rand_at(uint64_t seed, int64_t row, int64_t col) {
    uint64_t state = (seed * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)row * 0xBF58476D1CE4E5B9ull) ^
                     ((uint64_t)col * 0x94D049BB133111EBull) ^ 0x1234567ull;
    gradcheck_rng_next(&state);
    return gradcheck_uniform(&state, -1.0, 1.0);
}

typedef struct {
    int H, G, E;
    int64_t L, W;
    int memory, layout, tile_q, tile_k;
} kcase;

/* Naive attention over the whole window in double. q (L,HE), kv (L,2GE) at positions 0..L-1,
 * mem (L,2GE) at positions -L..-1 (or NULL), dout (L,HE). Outputs out, lse (L,H), dq, dkv. */
static void naive_attention(const kcase *c, const double *q, const double *kv, const double *mem,
                            const double *dout, double *out, double *lse, double *dq, double *dkv) {
    const int H = c->H, G = c->G, E = c->E, HE = H * E, KVW = 2 * G * E;
    const int64_t L = c->L;
    const double scale = 1.0 / sqrt((double)E);
    memset(out, 0, sizeof(double) * (size_t)(L * HE));
    memset(dq, 0, sizeof(double) * (size_t)(L * HE));
    memset(dkv, 0, sizeof(double) * (size_t)(L * KVW));
    double *p = malloc(sizeof(double) * (size_t)(2 * L)), *dp = malloc(sizeof(double) * (size_t)(2 * L));
    for (int h = 0; h < H; h++) {
        const int g = h / (H / G);
        for (int64_t i = 0; i < L; i++) {
            /* keys 0..L-1 are the window, L..2L-1 the memory at positions (j - L) - L */
            const int64_t nkeys = mem ? 2 * L : L;
            double m = -INFINITY;
            for (int64_t j = 0; j < nkeys; j++) {
                const int64_t pos = j < L ? j : j - 2 * L;
                const double *krow = (j < L ? kv + j * KVW : mem + (j - L) * KVW) + g * E;
                const int visible = pos <= i && (c->W == 0 || pos > i - c->W);
                double s = -INFINITY;
                if (visible) {
                    s = 0;
                    for (int e = 0; e < E; e++)
                        s += q[i * HE + h * E + e] * krow[e];
                    s *= scale;
                }
                p[j] = s;
                if (s > m) m = s;
            }
            double sum = 0;
            for (int64_t j = 0; j < nkeys; j++) {
                p[j] = p[j] == -INFINITY ? 0 : exp(p[j] - m);
                sum += p[j];
            }
            lse[i * H + h] = m + log(sum);
            double delta = 0;
            for (int64_t j = 0; j < nkeys; j++) {
                p[j] /= sum;
                const double *vrow = (j < L ? kv + j * KVW : mem + (j - L) * KVW) + G * E + g * E;
                double d = 0;
                for (int e = 0; e < E; e++) {
                    out[i * HE + h * E + e] += p[j] * vrow[e];
                    d += dout[i * HE + h * E + e] * vrow[e];
                }
                dp[j] = d;
                delta += p[j] * d;
            }
            for (int64_t j = 0; j < nkeys; j++) {
                if (p[j] == 0) continue;
                const double ds = p[j] * (dp[j] - delta) * scale;
                const double *krow = (j < L ? kv + j * KVW : mem + (j - L) * KVW) + g * E;
                for (int e = 0; e < E; e++)
                    dq[i * HE + h * E + e] += ds * krow[e];
                if (j >= L) continue; /* no gradient into the memory */
                for (int e = 0; e < E; e++) {
                    dkv[j * KVW + g * E + e] += ds * q[i * HE + h * E + e];
                    dkv[j * KVW + G * E + g * E + e] += p[j] * dout[i * HE + h * E + e];
                }
            }
        }
    }
    free(p);
    free(dp);
}

/* max |local - global[rows]| over max |global|, reduced over ranks. */
static double rel_error(const real_t *local, const double *global, const int64_t *pos, int64_t T, int width,
                        int64_t global_stride, int64_t col_stride) {
    double err[2] = {0, 0};
    for (int64_t i = 0; i < T; i++)
        for (int k = 0; k < width; k++) {
            const double ref = global[pos[i] * global_stride + k * col_stride];
            const double d = fabs((double)local[i * width + k] - ref);
            if (d > err[0] || isnan(d)) err[0] = isnan(d) ? INFINITY : d;
            if (fabs(ref) > err[1]) err[1] = fabs(ref);
        }
    MPI_Allreduce(MPI_IN_PLACE, err, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return err[1] > 0 ? err[0] / err[1] : err[0];
}

static void check_kernel(const strand_grid *grid, const kcase *c) {
    const int HE = c->H * c->E, KVW = 2 * c->G * c->E;
    const int64_t L = c->L;
    strand_shard shard;
    if (strand_shard_init(&shard, grid, L, c->layout) != STRAND_OK) {
        CHECK_MSG(0, "shard init L=%lld", (long long)L);
        return;
    }
    const int64_t T = shard.T;
    double *q = malloc(sizeof(double) * (size_t)(L * HE)), *kv = malloc(sizeof(double) * (size_t)(L * KVW));
    double *mem = malloc(sizeof(double) * (size_t)(L * KVW)),
           *dout = malloc(sizeof(double) * (size_t)(L * HE));
    for (int64_t i = 0; i < L; i++) {
        for (int k = 0; k < HE; k++) {
            q[i * HE + k] = 1.5 * rand_at(1, i, k);
            dout[i * HE + k] = rand_at(4, i, k);
        }
        for (int k = 0; k < KVW; k++) {
            kv[i * KVW + k] = 1.5 * rand_at(2, i, k);
            mem[i * KVW + k] = 1.5 * rand_at(3, i, k);
        }
    }
    double *out = malloc(sizeof(double) * (size_t)(L * HE)),
           *lse = malloc(sizeof(double) * (size_t)(L * c->H));
    double *dq = malloc(sizeof(double) * (size_t)(L * HE)), *dkv = malloc(sizeof(double) * (size_t)(L * KVW));
    naive_attention(c, q, kv, c->memory ? mem : NULL, dout, out, lse, dq, dkv);

    const int64_t rows = T > 0 ? T : 1;
    int64_t *pos = malloc(sizeof(int64_t) * (size_t)rows), *mpos = malloc(sizeof(int64_t) * (size_t)rows);
    real_t *lq = malloc(sizeof(real_t) * (size_t)(rows * HE)),
           *lkv = malloc(sizeof(real_t) * (size_t)(rows * KVW));
    real_t *lmem = malloc(sizeof(real_t) * (size_t)(rows * KVW)),
           *ldo = malloc(sizeof(real_t) * (size_t)(rows * HE));
    real_t *lout = malloc(sizeof(real_t) * (size_t)(rows * HE)),
           *llse = malloc(sizeof(real_t) * (size_t)(rows * c->H));
    real_t *ldq = malloc(sizeof(real_t) * (size_t)(rows * HE)),
           *ldkv = malloc(sizeof(real_t) * (size_t)(rows * KVW));
    real_t *lse_t = malloc(sizeof(real_t) * (size_t)(rows * c->H));
    for (int64_t i = 0; i < T; i++) {
        pos[i] = strand_shard_position(&shard, i);
        mpos[i] = pos[i] - L;
        for (int k = 0; k < HE; k++) {
            lq[i * HE + k] = (real_t)q[pos[i] * HE + k];
            ldo[i * HE + k] = (real_t)dout[pos[i] * HE + k];
        }
        for (int k = 0; k < KVW; k++) {
            lkv[i * KVW + k] = (real_t)kv[pos[i] * KVW + k];
            lmem[i * KVW + k] = (real_t)mem[pos[i] * KVW + k];
        }
    }
    strand_ring_attn ra;
    int status = strand_ring_attn_init(&ra, &shard, c->H, c->G, c->E, c->W, c->memory, c->tile_q, c->tile_k);
    CHECK(status == STRAND_OK);
    if (status == STRAND_OK) {
        /* Each check runs twice: the second call reuses the buffers (and catches state leaking
         * between calls); dq and dkv start non-zero to check that backward adds. */
        for (int rep = 0; rep < 2; rep++) {
            CHECK(strand_ring_attn_forward(&ra, lout, llse, lq, pos, lkv, pos, c->memory ? lmem : NULL,
                                           c->memory ? mpos : NULL) == STRAND_OK);
            for (int64_t i = 0; i < T * HE; i++)
                ldq[i] = 1;
            for (int64_t i = 0; i < T * KVW; i++)
                ldkv[i] = 1;
            CHECK(strand_ring_attn_backward(&ra, ldq, ldkv, ldo, lout, llse, lq, pos, lkv, pos,
                                            c->memory ? lmem : NULL, c->memory ? mpos : NULL) == STRAND_OK);
        }
        for (int64_t i = 0; i < T * HE; i++)
            ldq[i] -= 1;
        for (int64_t i = 0; i < T * KVW; i++)
            ldkv[i] -= 1;
        for (int64_t i = 0; i < T; i++) /* lse (H,T) -> (T,H) */
            for (int h = 0; h < c->H; h++)
                lse_t[i * c->H + h] = llse[h * T + i];
        const double e_out = rel_error(lout, out, pos, T, HE, HE, 1);
        const double e_lse = rel_error(lse_t, lse, pos, T, c->H, c->H, 1);
        const double e_dq = rel_error(ldq, dq, pos, T, HE, HE, 1);
        const double e_dkv = rel_error(ldkv, dkv, pos, T, KVW, KVW, 1);
        char label[160];
        snprintf(label, sizeof label, "%s L=%lld H=%d G=%d E=%d W=%lld mem=%d tiles=%d/%d steps=%d",
                 c->layout == STRAND_LAYOUT_ZIGZAG ? "zigzag" : "contiguous", (long long)L, c->H, c->G, c->E,
                 (long long)c->W, c->memory, c->tile_q, c->tile_k, c->memory ? ra.steps_mem : ra.steps);
        if (world_rank == 0)
            fprintf(stderr, "  kernel %-70s out %.1e lse %.1e dq %.1e dkv %.1e\n", label, e_out, e_lse, e_dq,
                    e_dkv);
        CHECK_MSG(e_out < EXACT_TOL, "%s: out error %g", label, e_out);
        CHECK_MSG(e_lse < EXACT_TOL, "%s: lse error %g", label, e_lse);
        CHECK_MSG(e_dq < EXACT_TOL, "%s: dq error %g", label, e_dq);
        CHECK_MSG(e_dkv < EXACT_TOL, "%s: dkv error %g", label, e_dkv);
        /* A window that fits in one shard with the contiguous layout must not go around the ring. */
        if (c->layout == STRAND_LAYOUT_CONTIGUOUS && c->W > 0 && !c->memory && c->W <= L / grid->sp_size)
            CHECK_MSG(ra.steps <= 2, "%s: %d ring steps for a window within one shard", label, ra.steps);
        if (c->W == 0) CHECK(ra.steps == grid->sp_size);
        /* Causal balance: after step 0 every tile is fully visible or skipped (both layouts, as
         * blocks after step 0 never straddle the diagonal; the memory lies entirely in the past). */
        if (c->W == 0)
            CHECK_MSG(ra.masked_tiles_late == 0, "%s: %lld masked tiles after step 0", label,
                      (long long)ra.masked_tiles_late);
        strand_ring_attn_free(&ra);
    }
    free(q), free(kv), free(mem), free(dout), free(out), free(lse), free(dq), free(dkv);
    free(pos), free(mpos), free(lq), free(lkv), free(lmem), free(ldo), free(lout), free(llse), free(ldq);
    free(ldkv), free(lse_t);
    strand_shard_free(&shard);
}

// ----------------------------------------------------------------------------
// the mixer

typedef struct {
    strand_mixer mixer;
    strand_param_table table;
    real_t *params, *grads;
    strand_shard shard;
    int64_t L;
    int C;
    double *x_global; /* (L,C) the window's input, the same on every rank */
    real_t *x, *out, *din, *r;
} mixer_ctx;

static void load_local_input(mixer_ctx *m) {
    for (int64_t i = 0; i < m->shard.T; i++) {
        const int64_t p = strand_shard_position(&m->shard, i);
        for (int k = 0; k < m->C; k++)
            m->x[i * m->C + k] = (real_t)m->x_global[p * m->C + k];
    }
}

static double mixer_loss(void *arg) {
    mixer_ctx *m = arg;
    load_local_input(m);
    if (m->mixer.ops->forward(&m->mixer, m->out, m->x, m->params, &m->shard) != STRAND_OK) return NAN;
    double loss = gradcheck_project(m->out, m->r, m->shard.T * m->C);
    MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return loss;
}

/* Gradient of the global input: a real array of x_global's shape (double copy for gradcheck). */
typedef struct {
    mixer_ctx *m;
    real_t *xg; /* (L,C) real copy perturbed by gradcheck */
} input_ctx;

static double input_loss(void *arg) {
    input_ctx *ic = arg;
    for (int64_t i = 0; i < ic->m->L * ic->m->C; i++)
        ic->m->x_global[i] = (double)ic->xg[i];
    return mixer_loss(ic->m);
}

typedef struct {
    int H, G, E;
    int64_t W;
    double base;
} mixer_dims;

static void project(const real_t *w, const double *x, int64_t L, int C, int OC, double *y) {
    for (int64_t i = 0; i < L; i++)
        for (int o = 0; o < OC; o++) {
            double s = 0;
            for (int c = 0; c < C; c++)
                s += (double)w[(int64_t)o * C + c] * x[i * C + c];
            y[i * OC + o] = s;
        }
}

static void rope_rows(double *x, int64_t ld, int heads, int E, int64_t L, int64_t shift, double base) {
    for (int64_t i = 0; i < L; i++)
        for (int h = 0; h < heads; h++)
            for (int j = 0; j < E / 2; j++) {
                const double angle = (double)(i + shift) * pow(base, -2.0 * j / E);
                double *v = x + i * ld + h * E;
                const double a = v[2 * j], b = v[2 * j + 1];
                v[2 * j] = a * cos(angle) - b * sin(angle);
                v[2 * j + 1] = a * sin(angle) + b * cos(angle);
            }
}

/* out (L,C) of the mixer from projections, RoPE and naive attention in double; mem_x (L,C) is the
 * previous window's input or NULL. */
static void naive_mixer_out(const mixer_ctx *m, const mixer_dims *d, const double *x, const double *mem_x,
                            double *out) {
    const int C = m->C, HE = d->H * d->E, KVW = 2 * d->G * d->E;
    const int64_t L = m->L;
    const strand_param_info *items = m->table.items;
    const real_t *wq = m->params + items[0].offset, *wkv = m->params + items[1].offset,
                 *wo = m->params + items[2].offset;
    double *q = malloc(sizeof(double) * (size_t)(L * HE)), *kv = malloc(sizeof(double) * (size_t)(L * KVW));
    double *mkv = malloc(sizeof(double) * (size_t)(L * KVW)), *y = malloc(sizeof(double) * (size_t)(L * HE));
    double *lse = malloc(sizeof(double) * (size_t)(L * d->H)),
           *zero = calloc((size_t)(L * HE), sizeof(double));
    double *dq = malloc(sizeof(double) * (size_t)(L * HE)), *dkv = malloc(sizeof(double) * (size_t)(L * KVW));
    project(wq, x, L, C, HE, q);
    project(wkv, x, L, C, KVW, kv);
    rope_rows(q, HE, d->H, d->E, L, 0, d->base);
    rope_rows(kv, KVW, d->G, d->E, L, 0, d->base);
    if (mem_x) {
        project(wkv, mem_x, L, C, KVW, mkv);
        rope_rows(mkv, KVW, d->G, d->E, L, -L, d->base);
    }
    kcase c = {d->H, d->G, d->E, L, d->W, mem_x != NULL, 0, 0, 0};
    naive_attention(&c, q, kv, mem_x ? mkv : NULL, zero, y, lse, dq, dkv);
    for (int64_t i = 0; i < L; i++)
        for (int o = 0; o < C; o++) {
            double s = 0;
            for (int k = 0; k < HE; k++)
                s += (double)wo[(int64_t)o * HE + k] * y[i * HE + k];
            out[i * C + o] = s;
        }
    free(q), free(kv), free(mkv), free(y), free(lse), free(zero), free(dq), free(dkv);
}

static void check_mixer(const strand_grid *grid, const char *label, int layout, int64_t L, int C,
                        const mixer_dims *d, int memory, int64_t max_checks) {
    strand_config config;
    strand_config_defaults(&config);
    config.d_model = C;
    CONFIG_SET(&config, "attn.heads=%d", d->H);
    CONFIG_SET(&config, "attn.kv_heads=%d", d->G);
    CONFIG_SET(&config, "attn.window=%lld", (long long)d->W);
    CONFIG_SET(&config, "attn.segment_memory=%s", memory ? "true" : "false");
    CONFIG_SET(&config, "attn.rope_base=%.17g", d->base);
    snprintf(config.layers, sizeof config.layers, "attn");
    mixer_ctx m;
    memset(&m, 0, sizeof m);
    m.L = L;
    m.C = C;
    const strand_mixer_ops *ops = strand_mixer_find("attn");
    CHECK(ops != NULL);
    if (!ops) return;
    CHECK(strand_shard_init(&m.shard, grid, L, layout) == STRAND_OK);
    CHECK(strand_mixer_create(&m.mixer, ops, C, &config, &m.table, "block0.mixer") == STRAND_OK);
    CHECK(m.table.count == 3);
    strand_plan plan;
    CHECK(strand_mixer_setup_alone(&m.mixer, &m.shard, &plan) == STRAND_OK);
    const int64_t T = m.shard.T, TC = (T > 0 ? T : 1) * C;
    m.params = calloc((size_t)m.table.total, sizeof(real_t));
    m.grads = calloc((size_t)m.table.total, sizeof(real_t));
    for (int p = 0; p < m.table.count; p++)
        for (int64_t j = 0; j < m.table.items[p].size; j++)
            m.params[m.table.items[p].offset + j] = (real_t)(0.5 * rand_at(10 + p, j, 0));
    m.x_global = malloc(sizeof(double) * (size_t)(L * C));
    double *x_prev = malloc(sizeof(double) * (size_t)(L * C));
    m.x = malloc(sizeof(real_t) * (size_t)TC);
    m.out = malloc(sizeof(real_t) * (size_t)TC);
    m.din = calloc((size_t)TC, sizeof(real_t));
    m.r = malloc(sizeof(real_t) * (size_t)TC);
    for (int64_t i = 0; i < L * C; i++) {
        m.x_global[i] = rand_at(20, i, 0);
        x_prev[i] = rand_at(21, i, 0);
    }
    for (int64_t i = 0; i < T; i++)
        for (int k = 0; k < C; k++)
            m.r[i * C + k] = (real_t)rand_at(22, strand_shard_position(&m.shard, i), k);

    /* With memory: the previous window goes first and rolls into the memory of the next forward. */
    if (memory) {
        double *save = m.x_global;
        m.x_global = x_prev;
        load_local_input(&m);
        CHECK(m.mixer.ops->forward(&m.mixer, m.out, m.x, m.params, &m.shard) == STRAND_OK);
        m.x_global = save;
    }
    load_local_input(&m);
    CHECK(m.mixer.ops->forward(&m.mixer, m.out, m.x, m.params, &m.shard) == STRAND_OK);
    double *ref = malloc(sizeof(double) * (size_t)(L * C));
    naive_mixer_out(&m, d, m.x_global, memory ? x_prev : NULL, ref);
    int64_t *pos = malloc(sizeof(int64_t) * (size_t)(T > 0 ? T : 1));
    for (int64_t i = 0; i < T; i++)
        pos[i] = strand_shard_position(&m.shard, i);
    const double e_fwd = rel_error(m.out, ref, pos, T, C, C, 1);
    if (world_rank == 0) fprintf(stderr, "  mixer %-40s forward vs naive %.1e\n", label, e_fwd);
    CHECK_MSG(e_fwd < EXACT_TOL, "%s: mixer forward error %g", label, e_fwd);

    /* Gradient checks with the memory frozen at the previous window (it takes no gradient). */
    if (memory) {
        double *save = m.x_global;
        m.mixer.ops->reset(&m.mixer);
        m.x_global = x_prev;
        load_local_input(&m);
        CHECK(m.mixer.ops->forward(&m.mixer, m.out, m.x, m.params, &m.shard) == STRAND_OK);
        strand_attn_memory_freeze(&m.mixer, 1);
        m.x_global = save;
    }
    load_local_input(&m);
    CHECK(m.mixer.ops->forward(&m.mixer, m.out, m.x, m.params, &m.shard) == STRAND_OK);
    CHECK(m.mixer.ops->backward(&m.mixer, m.din, m.grads, m.r, m.x, m.params, &m.shard) == STRAND_OK);
    CHECK(strand_allreduce_sum(MPI_COMM_WORLD, m.grads, m.table.total) == STRAND_OK);
    for (int p = 0; p < m.table.count; p++) {
        const strand_param_info *info = &m.table.items[p];
        gradcheck_result res = gradcheck_run(m.params + info->offset, info->size, m.grads + info->offset,
                                             mixer_loss, &m, GRADCHECK_EPS, MIXER_FLOOR, max_checks);
        char name[128];
        snprintf(name, sizeof name, "%s %s", label, info->name);
        if (world_rank == 0 && !MIXER_OK(res)) gradcheck_print(stderr, name, res);
        CHECK_MSG(MIXER_OK(res), "%s (ranks %d)", name, world_size);
    }
    /* The input: gather din into the global layout, then perturb the global input. */
    real_t *din_g = calloc((size_t)(L * C), sizeof(real_t)), *xg = malloc(sizeof(real_t) * (size_t)(L * C));
    for (int64_t i = 0; i < T; i++)
        memcpy(din_g + pos[i] * C, m.din + i * C, sizeof(real_t) * (size_t)C);
    CHECK(strand_allreduce_sum(MPI_COMM_WORLD, din_g, L * C) == STRAND_OK);
    for (int64_t i = 0; i < L * C; i++)
        xg[i] = (real_t)m.x_global[i];
    input_ctx ic = {&m, xg};
    gradcheck_result res =
        gradcheck_run(xg, L * C, din_g, input_loss, &ic, GRADCHECK_EPS, MIXER_FLOOR, max_checks);
    char name[128];
    snprintf(name, sizeof name, "%s input", label);
    if (world_rank == 0 && !MIXER_OK(res)) gradcheck_print(stderr, name, res);
    CHECK_MSG(MIXER_OK(res), "%s (ranks %d)", name, world_size);
    if (world_rank == 0)
        fprintf(stderr, "  mixer %-40s gradients checked (input norm_rel %.1e)\n", label, res.norm_rel);

    free(din_g), free(xg), free(ref), free(pos), free(x_prev);
    free(m.x_global), free(m.x), free(m.out), free(m.din), free(m.r), free(m.params), free(m.grads);
    m.mixer.ops->destroy(&m.mixer);
    strand_plan_free(&plan);
    strand_params_free(&m.table);
    strand_shard_free(&m.shard);
}

static void check_config_errors(void) {
    const struct {
        int C, H, G;
    } bad[] = {{16, 3, 0}, {16, 4, 3}, {12, 4, 8}, {12, 4, 0}}; /* H !| C; G !| H; G > H; odd E */
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        strand_config config;
        strand_config_defaults(&config);
        config.d_model = bad[i].C;
        CONFIG_SET(&config, "attn.heads=%d", bad[i].H);
        CONFIG_SET(&config, "attn.kv_heads=%d", bad[i].G);
        strand_param_table table;
        memset(&table, 0, sizeof table);
        strand_mixer mixer;
        const int status =
            strand_mixer_create(&mixer, strand_mixer_find("attn"), bad[i].C, &config, &table, "block0.mixer");
        CHECK_MSG(status == STRAND_ERR_CONFIG, "C=%d H=%d G=%d accepted", bad[i].C, bad[i].H, bad[i].G);
        if (world_rank == 0 && i == 0) fprintf(stderr, "  config error: %s\n", strand_error_message());
        mixer.ops->destroy(&mixer);
        strand_params_free(&table);
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 0, 1) == STRAND_OK);

    const int layouts[] = {STRAND_LAYOUT_CONTIGUOUS, STRAND_LAYOUT_ZIGZAG};
    for (int li = 0; li < 2; li++) {
        const int layout = layouts[li];
        /* uneven shards, GQA 4:2, tiny tiles (runs cut inside pieces) and default tiles */
        kcase cases[] = {
            {4, 2, 8, 37, 0, 0, layout, 3, 5},
            {4, 2, 8, 50, 0, 0, layout, 0, 0},
            {2, 2, 6, 37, 0, 0, layout, 4, 4},
            {4, 1, 8, 50, 0, 1, layout, 3, 7},
            {4, 2, 8, 50, 5, 0, layout, 2, 3},
            {4, 2, 8, 37, 13, 0, layout, 4, 8},
            {4, 2, 8, 50, 9, 1, layout, 3, 5},
            {2, 1, 4, 64, 1, 0, layout, 8, 8},
            {2, 2, 8, 50, 60, 1, layout, 0, 0},
            /* head dims that take the vectorised thin-GEMM path: 16..64 columns in one pass, and
             * 80 = 64 + 16 in two; row counts that leave remainders of the 6-row blocks */
            {2, 1, 16, 50, 0, 0, layout, 7, 11},
            {4, 2, 32, 37, 0, 1, layout, 5, 13},
            {1, 1, 48, 50, 9, 0, layout, 0, 0},
            {2, 1, 64, 37, 0, 0, layout, 13, 9},
            {1, 1, 80, 41, 0, 0, layout, 0, 0},
        };
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
            check_kernel(&grid, &cases[i]);
    }

    mixer_dims full = {4, 2, 4, 0, 10000.0};
    mixer_dims windowed = {2, 1, 8, 7, 100.0};
    check_mixer(&grid, "zigzag L=37 GQA", STRAND_LAYOUT_ZIGZAG, 37, 16, &full, 0, 96);
    check_mixer(&grid, "contiguous L=29 window=7", STRAND_LAYOUT_CONTIGUOUS, 29, 16, &windowed, 0, 96);
    check_mixer(&grid, "zigzag L=26 segment memory", STRAND_LAYOUT_ZIGZAG, 26, 16, &full, 1, 96);
    check_config_errors();

    strand_grid_free(&grid);
    int status = test_finish("test_attn");
    int any = 0;
    MPI_Allreduce(&status, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any;
}
