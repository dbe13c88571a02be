/* strand plan's predictions (perf.h): the work of one training step of a configuration on the
 * most loaded rank of a grid, from the mixers' cost hooks and the model's own layers, timed on a
 * calibrated machine; memory from the dry-run plan (strand_memory_estimate), so the two agree.
 *
 * The model's layers, per block (pre- or post-norm, forward + backward, counted from model.c):
 *   two norms: forward reads x and writes the output (2 T C each), backward reads dout, x and
 *   adds into dx (4 T C each); two residual adds (3 T C each) and backward's zeroing and copies
 *   (4 T C); the MLP: fc (C -> F) and proj (H -> C) linears, GELU's tanh (or SwiGLU's sigmoid)
 *   forward and backward, and its passes (zeroing d_act and d_fc, the activation forward and
 *   backward: 2 T H + T F + 5 T H).
 * The head: a (C -> V) linear, the softmax's exp over V per row, cross-entropy passes (5 T V), the
 * final norm (6 T C), the embedding forward and backward (2 T C).
 * The optimizer: AdamW reads p, g, m, v and writes p, m, v (7 P), the gradient norm (P), zeroing
 * the gradient (P). The all-reduce of the gradient over the world: Rabenseifner's reduce-scatter
 * plus all-gather, 2 (w-1)/w P bytes at the network's bandwidth and 2 log2(w) latencies.
 * train.recompute = block (and train.offload) runs every block's mixer forward but the last twice,
 * taken as a third of the mixer's forward + backward (backward does two GEMMs for each of
 * forward's), and rebuilds the MLP's hidden rows chunk by chunk: an eighth of the rest again.
 * I/O: each window's tokens and targets (2 bytes each per row) at the job's HDF5 read bandwidth
 * shared by its ranks. */
#include "strand/perf.h"

#include "kernels/fftconv.h"
#include "strand/memory_model.h"
#include "strand/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Where one step's time goes, for `dominant`. */
enum { T_GEMM, T_GEMV, T_ATTN, T_FFT, T_MEMORY, T_TRANS, T_MIXER_COMM, T_ALLREDUCE, T_IO, T_TERMS };
static const char *const term_names[T_TERMS] = {
    "GEMMs",           "matrix-vector products", "attention tiles",     "FFTs", "memory passes",
    "transcendentals", "mixer communication",    "gradient all-reduce", "I/O"};

typedef struct {
    double terms[T_TERMS];
} step_terms;

static void add_time(step_terms *t, const strand_cost_time *ct, double scale) {
    t->terms[T_GEMM] += ct->gemm_s * scale;
    t->terms[T_GEMV] += ct->gemv_s * scale;
    t->terms[T_ATTN] += ct->attn_s * scale;
    t->terms[T_FFT] += ct->fft_s * scale;
    t->terms[T_MEMORY] += ct->memory_s * scale;
    t->terms[T_TRANS] += ct->transcendental_s * scale;
    t->terms[T_MIXER_COMM] += ct->comm_s * scale;
}

static void init_cost(strand_cost *cost) {
    memset(cost, 0, sizeof *cost);
    cost->real_bytes = (int)sizeof(real_t);
}

/* The position-wise layers of one block (norms, residuals, MLP). */
static void block_cost(const strand_config *config, double T, strand_cost *cost) {
    const double C = config->d_model, H = strand_config_mlp_hidden(config);
    const int swiglu = config->mlp == STRAND_MLP_SWIGLU;
    const double F = swiglu ? 2 * H : H;
    strand_cost_linear(cost, T, C, F);
    strand_cost_linear(cost, T, H, C);
    strand_cost_exp(cost, 2 * T * H); /* GELU's tanh (SwiGLU's sigmoid) forward and backward */
    strand_cost_stream(cost, 2 * (2 + 4) * T * C + 2 * 3 * T * C + 4 * T * C);
    strand_cost_stream(cost, 2 * T * H + T * F + 5 * T * H);
}

/* The head, the loss and the embedding. */
static void head_cost(const strand_config *config, double T, strand_cost *cost) {
    const double C = config->d_model, V = strand_config_vocab(config);
    strand_cost_linear(cost, T, C, V);
    strand_cost_exp(cost, T * V);
    strand_cost_stream(cost, 5 * T * V + 6 * T * C + 2 * T * C);
}

/* A mixer's cost through its hook, or 3x its forward FLOPs at the matrix-vector rate. */
static void mixer_cost(const strand_mixer_ops *ops, const void *options, const strand_cost_shape *shape,
                       strand_cost *cost) {
    if (ops->cost) {
        ops->cost(options, shape, cost);
    } else if (ops->flops) {
        cost->gemv_flops += 3 * ops->flops(options, shape->C, shape->T);
    }
}

static double allreduce_seconds(const strand_machine *m, double bytes, int world, int nodes) {
    if (world < 2) return 0;
    double latency = 0, bw = 0;
    strand_machine_link(m, nodes > 1, &latency, &bw);
    return 2.0 * (world - 1) / world * bytes / bw + 2 * ceil(log2((double)world)) * latency;
}

static void finish_point(strand_plan_point *p, const step_terms *t) {
    int best = 0;
    for (int i = 1; i < T_TERMS; i++)
        if (t->terms[i] > t->terms[best]) best = i;
    const double share = p->step_s > 0 ? 100 * t->terms[best] / p->step_s : 0;
    snprintf(p->dominant, sizeof p->dominant, "%s (%.0f%%)", term_names[best], share);
}

/* Shared by both plans: the grid, the memory, the shape. Returns 0 when the grid is refused. */
static int plan_grid(const strand_config *config, int ranks, const strand_plan_nodes *nodes,
                     strand_plan_point *p, strand_cost_shape *shape, strand_memory_report *report) {
    const int ranks_per_node = nodes->ranks_per_node;
    const double node_memory = nodes->node_memory_bytes;
    memset(p, 0, sizeof *p);
    p->ranks = ranks;
    p->ranks_per_node = ranks_per_node > 0 && ranks_per_node < ranks ? ranks_per_node : ranks;
    p->nodes = (ranks + p->ranks_per_node - 1) / p->ranks_per_node;
    if (strand_grid_shape(ranks, config->sp, config->dp, &p->sp, &p->dp) != STRAND_OK ||
        strand_memory_estimate(config, p->sp, p->dp, report) != STRAND_OK) {
        snprintf(p->refused, sizeof p->refused, "%s", strand_error_message());
        strand_error_clear();
        return 0;
    }
    if (nodes->baseline_bytes > 0) strand_memory_set_baseline(report, nodes->baseline_bytes);
    p->rows = report->rows;
    p->memory_bytes = report->total;
    p->fits = node_memory <= 0 || (double)p->memory_bytes * p->ranks_per_node <= node_memory;
    memset(shape, 0, sizeof *shape);
    shape->C = config->d_model;
    shape->T = report->rows;
    shape->L = config->seq_len;
    shape->sp = p->sp;
    shape->layout = report->layout;
    shape->conv_strategy = report->conv_strategy;
    shape->fft_size = strand_fftconv_size_for(config->seq_len);
    shape->real_bytes = (int)sizeof(real_t);
    return 1;
}

/* The block's mixer's slot in the point (one per distinct name). */
static int mixer_slot(strand_plan_point *p, const char *name) {
    for (int i = 0; i < p->mixers; i++)
        if (strcmp(p->mixer_name[i], name) == 0) return i;
    if (p->mixers == STRAND_PLAN_MIXERS) return STRAND_PLAN_MIXERS - 1;
    snprintf(p->mixer_name[p->mixers], sizeof p->mixer_name[0], "%.31s", name);
    return p->mixers++;
}

int strand_perf_plan_train(const strand_config *config, const strand_machine *m, int ranks,
                           const strand_plan_nodes *nodes, strand_plan_point *p) {
    strand_cost_shape shape;
    strand_memory_report report;
    if (!plan_grid(config, ranks, nodes, p, &shape, &report)) return STRAND_OK;
    char names[STRAND_MAX_BLOCKS][32];
    const int n = strand_model_split_layers(config->layers, names, STRAND_MAX_BLOCKS);
    if (n <= 0) STRAND_FAIL(STRAND_ERR_CONFIG, "model.layers = '%s' names no mixer", config->layers);
    const double T = (double)shape.T, micro = config->accum_steps;
    /* recompute: every block's mixer forward but the last once more (a third of its forward +
     * backward), and the MLP's hidden rows of every block (its fc GEMM, a sixth of the MLP's GEMMs;
     * with the norms about an eighth of the position-wise work) */
    const int recompute = config->recompute == STRAND_RECOMPUTE_BLOCK || config->offload[0];
    const double again = recompute ? (double)(n - 1) / n / 3 : 0, again_rest = recompute ? 1.0 / 8 : 0;
    step_terms terms = {{0}};
    strand_cost_time ct;
    for (int l = 0; l < n; l++) {
        const strand_mixer_ops *ops = strand_mixer_find(names[l]);
        if (!ops) STRAND_FAIL(STRAND_ERR_CONFIG, "model.layers: unknown mixer '%s'", names[l]);
        strand_cost cost;
        init_cost(&cost);
        mixer_cost(ops, strand_mixer_options(config, ops), &shape, &cost);
        strand_cost_seconds(&cost, &shape, m, p->ranks_per_node, p->nodes, &ct);
        const int slot = mixer_slot(p, names[l]);
        p->mixer_compute_s[slot] += micro * (1 + again) * ct.compute_s;
        p->mixer_comm_s[slot] += micro * (1 + again) * ct.comm_s;
        add_time(&terms, &ct, micro * (1 + again));
    }
    strand_cost other;
    init_cost(&other);
    for (int l = 0; l < n; l++)
        block_cost(config, T, &other);
    head_cost(config, T, &other);
    strand_cost_seconds(&other, &shape, m, p->ranks_per_node, p->nodes, &ct);
    p->other_compute_s = micro * (1 + again_rest) * ct.compute_s;
    add_time(&terms, &ct, micro * (1 + again_rest));
    /* once per step: the optimizer over the flat arrays, and the all-reduce */
    strand_cost opt;
    init_cost(&opt);
    strand_cost_stream(&opt, 9.0 * (double)report.parameters);
    strand_cost_seconds(&opt, &shape, m, p->ranks_per_node, p->nodes, &ct);
    p->other_compute_s += ct.compute_s;
    add_time(&terms, &ct, 1);
    p->allreduce_s = allreduce_seconds(m, (double)report.parameters * sizeof(real_t), ranks, p->nodes);
    terms.terms[T_ALLREDUCE] = p->allreduce_s;
    p->io_s = micro * 4.0 * T * ranks / m->hdf5_read_bytes_per_s;
    terms.terms[T_IO] = p->io_s;
    p->compute_s = p->other_compute_s;
    p->comm_s = p->allreduce_s;
    for (int i = 0; i < p->mixers; i++)
        p->compute_s += p->mixer_compute_s[i], p->comm_s += p->mixer_comm_s[i];
    p->step_s = p->compute_s + p->comm_s + p->io_s;
    p->tokens_per_step = (double)config->seq_len * micro * p->dp;
    finish_point(p, &terms);
    return STRAND_OK;
}

int strand_perf_plan_mixer(const strand_config *config, const char *name, const strand_machine *m, int ranks,
                           const strand_plan_nodes *nodes, strand_plan_point *p) {
    const strand_mixer_ops *ops = strand_mixer_find(name);
    if (!ops) STRAND_FAIL(STRAND_ERR_CONFIG, "unknown mixer '%s'", name);
    strand_cost_shape shape;
    strand_memory_report report;
    if (!plan_grid(config, ranks, nodes, p, &shape, &report)) return STRAND_OK;
    strand_cost cost;
    init_cost(&cost);
    mixer_cost(ops, strand_mixer_options(config, ops), &shape, &cost);
    strand_cost_time ct;
    strand_cost_seconds(&cost, &shape, m, p->ranks_per_node, p->nodes, &ct);
    step_terms terms = {{0}};
    add_time(&terms, &ct, 1);
    p->mixers = 1;
    snprintf(p->mixer_name[0], sizeof p->mixer_name[0], "%.31s", name);
    p->mixer_compute_s[0] = p->compute_s = ct.compute_s;
    p->mixer_comm_s[0] = p->comm_s = ct.comm_s;
    p->step_s = p->compute_s + p->comm_s;
    p->tokens_per_step = (double)config->seq_len;
    finish_point(p, &terms);
    return STRAND_OK;
}

void strand_perf_efficiency(strand_plan_point *points, int count) {
    const strand_plan_point *base = NULL;
    for (int i = 0; i < count; i++) {
        strand_plan_point *p = &points[i];
        if (p->refused[0] || p->step_s <= 0) continue;
        if (!base) base = p;
        /* tokens per second per rank against the first point's */
        const double rate = p->tokens_per_step / p->step_s / p->ranks;
        const double base_rate = base->tokens_per_step / base->step_s / base->ranks;
        p->efficiency = rate / base_rate;
    }
}

int strand_perf_scaling_limit(const strand_plan_point *points, int count, char *why, size_t size) {
    why[0] = 0;
    const strand_plan_point *prev = NULL;
    for (int i = 0; i < count; i++) {
        const strand_plan_point *p = &points[i];
        if (p->refused[0] || p->step_s <= 0) continue;
        if (prev && p->tokens_per_step == prev->tokens_per_step && p->step_s >= prev->step_s) {
            snprintf(why, size, "stops scaling at %d ranks: the step is no faster than at %d; %s dominates",
                     p->ranks, prev->ranks, p->dominant);
            return i;
        }
        if (p->efficiency > 0 && p->efficiency < 0.5) {
            snprintf(why, size, "stops scaling at %d ranks: parallel efficiency %.0f%% < 50%%; %s dominates",
                     p->ranks, 100 * p->efficiency, p->dominant);
            return i;
        }
        prev = p;
    }
    return -1;
}
