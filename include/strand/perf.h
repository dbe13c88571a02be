/* The performance model: a machine's measured constants (`strand calibrate`), the work of one
 * training step counted from the configuration (each mixer's cost hook, model.h), and the step time
 * and memory they predict for a grid (`strand plan`).
 *
 * Rates are per rank. A rank computes at the machine's rates when the node has a core for it; with
 * more ranks than cores on a node (oversubscribed) each rank gets cores / ranks_per_node of one. */
#ifndef STRAND_PERF_H
#define STRAND_PERF_H

#include "strand/config.h"

#include <stdint.h>

/* Sizes at which the tables below are measured (a rate between two sizes is interpolated in
 * log size, and clamped outside). */
enum { STRAND_MACHINE_GEMM_WIDTHS = 7, STRAND_MACHINE_FFT_SIZES = 5, STRAND_MACHINE_ATTN_DIMS = 3 };
/* Distinct mixers a plan reports separately. */
enum { STRAND_PLAN_MIXERS = 8 };

typedef struct {
    char host[64];
    char precision[8]; /* "float" or "double": the build that measured it */
    int ranks, nodes, cores_per_node;
    double memory_per_node_bytes;
    /* BLAS: C (M x N) = A (M x K) B (K x N) with M = 8192 rows and (K, N) = (w, 4w) for each width
     * w (the MLP's shape at d_model = w); sgemm_gflops is the square 1024^3 product. */
    double sgemm_gflops, sgemv_gflops;
    double gemm_width[STRAND_MACHINE_GEMM_WIDTHS], gemm_gflops[STRAND_MACHINE_GEMM_WIDTHS];
    /* FFTW (FFTW_ESTIMATE, as strand plans by default): seconds per point of one real forward +
     * inverse pair (r2c then c2r) of n real points, and of one complex forward + inverse pair of
     * n complex points, divided by n and by 2 (one transform's share). */
    double fft_size[STRAND_MACHINE_FFT_SIZES];
    double fft_real_s_per_point[STRAND_MACHINE_FFT_SIZES];
    double fft_complex_s_per_point[STRAND_MACHINE_FFT_SIZES];
    /* strand's attention tile kernel, forward + backward on one rank, in GFLOP/s of the causal
     * FLOPs (bench ring's count), at head dims attn_head_dim. */
    double attn_head_dim[STRAND_MACHINE_ATTN_DIMS], attn_gflops[STRAND_MACHINE_ATTN_DIMS];
    /* Memory: bytes per second of a streaming triad a[i] = b[i] + s c[i] over arrays far larger than
     * the caches (counted as 3 arrays' bytes), and libm calls (expf, sinf, tanhf) per second. */
    double memory_bytes_per_s, transcendentals_per_s;
    /* The same triad on every rank of rank 0's node at once: their bandwidths summed (the node's
     * memory bandwidth when memory_node_ranks ranks share it). */
    double memory_node_bytes_per_s;
    int memory_node_ranks;
    /* A rank's GEMM rate while every rank of rank 0's node runs one, over its rate alone (at most
     * 1: shared cores, all-core clocks); strand plan slows compute by it when a node is busy. */
    double compute_node_factor;
    /* MPI: ping-pong between two ranks of a node (and of two nodes, 0 when one node): one-way
     * latency of a small message, bandwidth of a large one. All-to-all: bytes each rank sends per
     * second in an MPI_Alltoall over every rank of the calibration job. */
    double p2p_latency_s, p2p_bytes_per_s;
    double p2p_inter_latency_s, p2p_inter_bytes_per_s;
    double alltoall_bytes_per_s;
    int alltoall_ranks;
    /* Parallel HDF5: a collective write then read of one dataset, every rank its own hyperslab,
     * in bytes per second of the whole job, to the directory named. */
    double hdf5_write_bytes_per_s, hdf5_read_bytes_per_s;
    char io_dir[256];
} strand_machine;

/* Documented defaults when no --machine file is given: one core of a 2020s x86 server (used by
 * tests and by `strand plan` without a calibration; the plan says it uses them). */
void strand_machine_default(strand_machine *machine);
/* Read or write the JSON file `strand calibrate` writes. Reading refuses a file that is not one
 * (file and reason), and a missing or non-positive rate. Writing is atomic. */
int strand_machine_read(const char *path, strand_machine *machine);
int strand_machine_write(const char *path, const strand_machine *machine);
/* Rates looked up in the tables (interpolated in log size, clamped at the ends). */
double strand_machine_gemm_flops_per_s(const strand_machine *machine, double width);
double strand_machine_fft_seconds(const strand_machine *machine, double n, int complex_points);
double strand_machine_attn_flops_per_s(const strand_machine *machine, double head_dim);
/* The link a message takes: between nodes when `across_nodes` and the file measured one (else
 * within a node): its one-way latency and bandwidth. Returns whether it is the inter-node link. */
int strand_machine_link(const strand_machine *machine, int across_nodes, double *latency_s,
                        double *bytes_per_s);

/* Options of the calibration (strand calibrate's flags). */
typedef struct {
    const char *io_dir;        /* where the HDF5 test file goes (removed afterwards) */
    int64_t io_bytes_per_rank; /* HDF5 bytes per rank (default 64 MiB) */
    int quick;                 /* smaller sizes and fewer repeats (tests) */
} strand_calibrate_options;

/* Measure this machine's constants with every rank of comm taking part (collective). The rates of
 * one rank are measured on world rank 0 while the others wait, except the ones that need ranks:
 * ping-pong between ranks 0 and 1 (of one node) and between rank 0 and the first rank of another
 * node, the all-to-all over all ranks, HDF5 over all ranks. */
int strand_calibrate(MPI_Comm comm, const strand_calibrate_options *options, strand_machine *machine);

/* ---- the work of a step (counted per rank; filled by the mixers' cost hooks and the model) ---- */
typedef struct {
    int C;             /* channels */
    int64_t T;         /* rows of the most loaded rank */
    int64_t L;         /* window (train.seq_len) */
    int sp;            /* ranks sharing the window */
    int layout;        /* enum strand_layout_kind */
    int conv_strategy; /* enum strand_conv_strategy the long convolution would use */
    int64_t fft_size;  /* the long convolution's transform size N (>= 2L) */
    int real_bytes;    /* sizeof(real_t) of the build planned for */
} strand_cost_shape;

enum { STRAND_COST_GEMMS = 16, STRAND_COST_LINEARS = 16 };

/* Work of forward + backward on one rank. Compute is split by the rate it runs at; communication
 * by pattern. Every field adds (a hook adds its own work to what is there). */
typedef struct {
    /* BLAS GEMMs, grouped by the width that sets their rate (the smaller of a linear's sizes) */
    double gemm_flops[STRAND_COST_GEMMS], gemm_width[STRAND_COST_GEMMS];
    int gemms;
    double gemv_flops; /* matrix-vector work (recurrences: one position at a time) */
    double attn_flops; /* the attention tile kernel (bench ring's causal count, fwd + bwd) */
    double attn_head_dim;
    double fft_real_points;    /* sum over real transforms of their size n, each of size fft_n */
    double fft_complex_points; /* the same for complex transforms (this rank's share) */
    double fft_n;
    double memory_bytes;    /* streaming passes over memory (elementwise work, packing, zeroing) */
    double transcendentals; /* libm calls */
    /* communication, per rank */
    double alltoall_bytes; /* sent in all-to-alls over the SP group ... */
    double alltoall_count; /* ... in this many calls */
    double p2p_bytes;      /* sent point to point, not overlapped ... */
    double p2p_messages;   /* ... in this many messages on the critical path */
    /* ring attention: steps of (compute, transfer) that overlap, each taking the larger (one ring
     * per cost: a hook with two rings sums them into one) */
    double ring_steps, ring_flops_per_step, ring_bytes_per_step;
    /* a recurrence handed rank to rank: its matrix-vector work waits for that of every rank
     * before it (sp - 1 for a wavefront, 0 for a scan) */
    double serial_ranks;
    int real_bytes; /* sizeof(real_t) of the build planned for (set before the hooks run) */
    /* each linear layer as counted, rows x in -> out, and whether its input gradient is formed:
     * the GEMM shapes `strand bench fftconv --layer` times for its floor (the first
     * STRAND_COST_LINEARS) */
    int linears;
    double linear_rows[STRAND_COST_LINEARS], linear_in[STRAND_COST_LINEARS], linear_out[STRAND_COST_LINEARS];
    int linear_input_grad[STRAND_COST_LINEARS];
} strand_cost;

/* Helpers for the hooks. A linear layer (rows x in) -> (rows x out), forward and backward: three
 * GEMMs of 2 rows in out FLOPs, each at the rate of its inner dimension (in, out, rows). */
void strand_cost_linear(strand_cost *cost, double rows, double in, double out);
/* The same for a first layer whose input needs no gradient (two GEMMs: forward and dW). */
void strand_cost_linear_no_input_grad(strand_cost *cost, double rows, double in, double out);
/* `values` evaluations of strand's exp, tanh or sincos (kernels/fastmath.h). */
void strand_cost_exp(strand_cost *cost, double values);
/* Streaming passes: `values` reals read or written (times real_bytes). */
void strand_cost_stream(strand_cost *cost, double values);
/* The causal depthwise short convolution of K taps over C channels with its halo exchange. */
void strand_cost_short_conv(strand_cost *cost, const strand_cost_shape *shape, int C, int K);
/* The distributed long convolution (kernels/fftconv.h) of C channels, forward + backward, for the
 * shape's strategy: transforms, packing and exchanges. */
void strand_cost_long_conv(strand_cost *cost, const strand_cost_shape *shape, int C);
/* Ring attention of H query and G key/value heads of dimension E, window W (0 = full causal). */
void strand_cost_ring_attention(strand_cost *cost, const strand_cost_shape *shape, int H, int G, int E,
                                int64_t window);
/* Visible query-key pairs of a causal window of L positions with span W (0 = full). */
double strand_cost_causal_pairs(int64_t L, int64_t window);

/* Seconds of one rank's compute and communication for this work on this machine, with
 * ranks_per_node ranks on a node (oversubscription slows compute by ranks_per_node / cores). */
typedef struct {
    double gemm_s, gemv_s, attn_s, fft_s, memory_s, transcendental_s, ring_s;
    double compute_s, comm_s; /* compute_s includes the wavefront's wait; ring_s is split in both */
} strand_cost_time;
void strand_cost_seconds(const strand_cost *cost, const strand_cost_shape *shape,
                         const strand_machine *machine, int ranks_per_node, int nodes, strand_cost_time *out);

/* One grid point of a plan. */
typedef struct {
    int ranks, nodes, ranks_per_node, sp, dp;
    int64_t rows; /* of the most loaded rank */
    double compute_s, comm_s, io_s, step_s;
    char mixer_name[STRAND_PLAN_MIXERS][32]; /* each distinct mixer of model.layers, all its blocks */
    double mixer_compute_s[STRAND_PLAN_MIXERS], mixer_comm_s[STRAND_PLAN_MIXERS];
    int mixers;
    double other_compute_s; /* embedding, norms, MLP, head, loss, optimizer */
    double allreduce_s;     /* the gradient all-reduce over the world */
    int64_t memory_bytes;   /* the dry-run plan's peak per rank */
    int fits;               /* memory_bytes x ranks_per_node <= node memory */
    double tokens_per_step; /* trained tokens a step (seq_len x accum_steps x dp) */
    double efficiency;      /* tokens per second per rank against the first point's */
    char dominant[64];      /* the largest term */
    char refused[256];      /* non-empty: this grid is refused (strand train's reason) */
} strand_plan_point;

/* Predict one grid point of a training step of `config` on `ranks` ranks placed on nodes as
 * `nodes` says. A grid the configuration
 * refuses (sp x dp, a window shorter than the group, an exchange too large) is returned with
 * `refused` set, not as an error; an unknown mixer is an error. Pure: no MPI, no allocation of the
 * model's size. */
typedef struct {
    int ranks_per_node;       /* 0: every rank on one node */
    double node_memory_bytes; /* 0: not checked */
    int64_t baseline_bytes;   /* the process without strand's buffers (0: the memory model's default) */
} strand_plan_nodes;
int strand_perf_plan_train(const strand_config *config, const strand_machine *machine, int ranks,
                           const strand_plan_nodes *nodes, strand_plan_point *point);
/* The same for one mixer's forward + backward (what `strand bench mixer` times): config is the
 * bench's (model.layers = name, model.d_model, train.seq_len). */
int strand_perf_plan_mixer(const strand_config *config, const char *name, const strand_machine *machine,
                           int ranks, const strand_plan_nodes *nodes, strand_plan_point *point);
/* Fill every point's efficiency against the first point that is not refused. */
void strand_perf_efficiency(strand_plan_point *points, int count);
/* The first point where scaling stops (the step is no faster at the same work, or efficiency falls
 * under 50%), with the reason in why; -1 when it scales through the last point. */
int strand_perf_scaling_limit(const strand_plan_point *points, int count, char *why, size_t size);

#endif
