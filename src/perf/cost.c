/* The work of the shared kernels (linear layers, short and long convolutions, ring attention),
 * counted from the code that runs them, and its time on a calibrated machine (perf.h).
 *
 * Counting rules, forward + backward together:
 *  - linear (rows x in -> out): forward one GEMM of 2 rows in out FLOPs, backward two (dX, dW);
 *    the bias add and its gradient are two passes over the output.
 *  - streaming work is counted in reals read plus reals written: an elementwise loop over n values
 *    that reads two arrays and writes one is 3 n. Zeroing a buffer counts as writing it.
 *  - communication: an exchange's bytes are what this rank sends; a message on the critical path
 *    costs one latency. */
#include "strand/perf.h"

#include "kernels/fftconv.h"
#include "strand/layout.h"

#include <math.h>
#include <string.h>

void strand_cost_stream(strand_cost *cost, double values);

static double max2(double a, double b) {
    return a > b ? a : b;
}

/* A GEMM's rate follows its inner dimension (the calibration's width is the K of an (M, K) x (K, 4K)
 * product), clamped to the table's ends. */
static void add_gemm(strand_cost *cost, double flops, double inner) {
    int slot = -1;
    for (int i = 0; i < cost->gemms; i++)
        if (cost->gemm_width[i] == inner) slot = i;
    if (slot < 0 && cost->gemms < STRAND_COST_GEMMS) {
        slot = cost->gemms++;
        cost->gemm_width[slot] = inner;
        cost->gemm_flops[slot] = 0;
    }
    if (slot < 0) slot = STRAND_COST_GEMMS - 1; /* more widths than slots: the last takes the rest */
    cost->gemm_flops[slot] += flops;
}

static void record_linear(strand_cost *cost, double rows, double in, double out, int input_grad) {
    if (cost->linears >= STRAND_COST_LINEARS) return;
    const int i = cost->linears++;
    cost->linear_rows[i] = rows;
    cost->linear_in[i] = in;
    cost->linear_out[i] = out;
    cost->linear_input_grad[i] = input_grad;
}

void strand_cost_linear(strand_cost *cost, double rows, double in, double out) {
    const double flops = 2.0 * rows * in * out;
    add_gemm(cost, flops, in);   /* forward: (rows, in) x (in, out) */
    add_gemm(cost, flops, out);  /* dX: (rows, out) x (out, in) */
    add_gemm(cost, flops, rows); /* dW: (out, rows) x (rows, in) */
    /* bias add (read + write the output) and its gradient (read dout) */
    strand_cost_stream(cost, 3.0 * rows * out);
    record_linear(cost, rows, in, out, 1);
}

void strand_cost_linear_no_input_grad(strand_cost *cost, double rows, double in, double out) {
    const double flops = 2.0 * rows * in * out;
    add_gemm(cost, flops, in);
    add_gemm(cost, flops, rows);
    strand_cost_stream(cost, 3.0 * rows * out);
    record_linear(cost, rows, in, out, 0);
}

void strand_cost_exp(strand_cost *cost, double values) {
    /* float builds: strand_exp is a polynomial the compiler vectorises, about two passes' worth;
     * double builds call libm */
    if (cost->real_bytes == 4)
        strand_cost_stream(cost, 2 * values);
    else
        cost->transcendentals += values;
}

void strand_cost_stream(strand_cost *cost, double values) {
    cost->memory_bytes += values * (double)cost->real_bytes;
}

/* Halo rows of a K-tap convolution: contiguous shards send K-1 rows to the next rank with one
 * MPI_Sendrecv; zigzag shards all-gather every rank's edge rows (log2 sp rounds). */
static void halo_cost(strand_cost *cost, const strand_cost_shape *shape, int C, int K) {
    if (shape->sp == 1 || K <= 1) return;
    const double rows = (double)(K - 1) * C * shape->real_bytes;
    if (shape->layout == STRAND_LAYOUT_ZIGZAG) {
        const double rounds = ceil(log2((double)shape->sp));
        cost->p2p_messages += 2 * rounds;
        cost->p2p_bytes += 2 * (double)STRAND_MAX_PIECES * rows * (shape->sp - 1);
    } else {
        cost->p2p_messages += 2;
        cost->p2p_bytes += 2 * rows;
    }
}

void strand_cost_short_conv(strand_cost *cost, const strand_cost_shape *shape, int C, int K) {
    const double TC = (double)shape->T * C;
    /* forward reads in, writes out; backward reads dout and in and adds into din (4 T C), and
     * accumulates each tap's weight gradient in double, about one pass's worth per tap (measured
     * with bench mixer --layer conv: 9 T C at K = 4) */
    strand_cost_stream(cost, 2 * TC + (3.0 + K) * TC);
    halo_cost(cost, shape, C, K);
}

void strand_cost_long_conv(strand_cost *cost, const strand_cost_shape *shape, int C) {
    const int sp = shape->sp;
    const double N = (double)shape->fft_size, T = (double)shape->T, TC = T * C;
    const double spread = sp > 1 ? (double)(sp - 1) / sp : 0;
    cost->fft_n = N;
    /* the six T C rows that cross the group (u, k, y forward; dy, du, dk backward) */
    const double exchanged = 6 * TC * shape->real_bytes * spread;
    if (shape->conv_strategy == STRAND_CONV_FFTW_MPI && sp > 1) {
        /* channel pairs: 9 distributed complex transforms each (fftconv.c's header), N/sp points of
         * each on this rank; every execute runs two transposes of the local column */
        const double P = ceil(C / 2.0), local = ceil(N / sp), transforms = 9 * P;
        cost->fft_complex_points += transforms * local;
        cost->alltoall_bytes += exchanged + transforms * 2 * local * 2 * shape->real_bytes * spread;
        cost->alltoall_count += 4 + 2 * transforms;
        /* pointwise products and the packing into and out of complex columns */
        strand_cost_stream(cost, transforms * local * 2 * 3 + 12 * TC);
    } else {
        /* channel shards of cc channels over all L positions, local r2c/c2r: 3 forward and 3
         * backward real transforms per channel; unpacking into zero-padded columns of N and packing
         * back; three complex products over N/2 + 1 frequencies */
        const double cc = ceil((double)C / sp);
        cost->fft_real_points += 6 * cc * N;
        if (sp > 1) {
            cost->alltoall_bytes += exchanged;
            cost->alltoall_count += 4;
        }
        strand_cost_stream(cost, 6 * (2 * TC + cc * N) + 3 * cc * (N / 2 + 1) * 2 * 3);
    }
}

double strand_cost_causal_pairs(int64_t L, int64_t window) {
    const double l = (double)L;
    if (window <= 0 || window >= L) return l * (l + 1) / 2;
    const double w = (double)window;
    return w * l - w * (w - 1) / 2;
}

void strand_cost_ring_attention(strand_cost *cost, const strand_cost_shape *shape, int H, int G, int E,
                                int64_t window) {
    const int sp = shape->sp;
    const double T = (double)shape->T;
    /* bench ring's count: 4 E H FLOPs per visible pair forward, 2.5x that backward */
    double per_rank = 3.5 * 4.0 * E * H * strand_cost_causal_pairs(shape->L, window) / sp;
    /* Contiguous full causal: the last rank sees the most keys, (2 sp - 1) / sp of the mean. */
    if (shape->layout == STRAND_LAYOUT_CONTIGUOUS && window <= 0) per_rank *= (2.0 * sp - 1) / sp;
    cost->attn_flops += per_rank;
    cost->attn_head_dim = E;
    /* The ring: steps until every visible block has been seen; per step the K/V block travels
     * forward, and K/V plus the dK/dV accumulators backward. */
    double steps = sp;
    if (window > 0 && shape->layout == STRAND_LAYOUT_CONTIGUOUS)
        steps = fmin((double)sp, 1 + ceil((double)(window - 1) / fmax(T, 1)));
    if (sp > 1) {
        cost->ring_steps += steps;
        cost->ring_flops_per_step = per_rank / steps;
        cost->ring_bytes_per_step = 3 * T * 2.0 * G * E * shape->real_bytes;
    }
    /* RoPE on q and k, forward and backward; zeroing dq, dkv and dy */
    strand_cost_stream(cost, 2 * 2 * T * (H + G) * E + T * (2 * H + 2 * G) * E);
}

/* ---- time on a machine ---- */

void strand_cost_seconds(const strand_cost *cost, const strand_cost_shape *shape, const strand_machine *m,
                         int ranks_per_node, int nodes, strand_cost_time *out) {
    memset(out, 0, sizeof *out);
    /* More ranks than cores on a node: each rank gets cores / ranks_per_node of a core. */
    const double slow = m->cores_per_node > 0 && ranks_per_node > m->cores_per_node
                            ? (double)ranks_per_node / m->cores_per_node
                            : 1;
    for (int i = 0; i < cost->gemms; i++)
        out->gemm_s += cost->gemm_flops[i] / strand_machine_gemm_flops_per_s(m, cost->gemm_width[i]);
    out->gemv_s = cost->gemv_flops / (m->sgemv_gflops * 1e9);
    if (cost->attn_flops > 0)
        out->attn_s = cost->attn_flops / strand_machine_attn_flops_per_s(m, cost->attn_head_dim);
    if (cost->fft_n > 0) {
        out->fft_s = cost->fft_real_points / cost->fft_n * strand_machine_fft_seconds(m, cost->fft_n, 0) +
                     cost->fft_complex_points / cost->fft_n * strand_machine_fft_seconds(m, cost->fft_n, 1);
    }
    /* Ranks of a node share its memory bandwidth: each gets the node's over the ranks that run at
     * once (at most one per core), never more than one rank alone. */
    const int running =
        ranks_per_node < m->cores_per_node || m->cores_per_node <= 0 ? ranks_per_node : m->cores_per_node;
    double bandwidth = m->memory_bytes_per_s;
    if (running > 1 && m->memory_node_bytes_per_s / running < bandwidth)
        bandwidth = m->memory_node_bytes_per_s / running;
    out->memory_s = cost->memory_bytes / bandwidth;
    out->transcendental_s = cost->transcendentals / m->transcendentals_per_s;
    /* A busy node computes slower per rank than one rank alone (shared cores, all-core clocks);
     * memory has its own sharing above. */
    const double busy =
        ranks_per_node > 1 && m->compute_node_factor > 0 ? slow / m->compute_node_factor : slow;
    out->gemm_s *= busy, out->gemv_s *= busy, out->attn_s *= busy, out->fft_s *= busy;
    out->memory_s *= slow, out->transcendental_s *= busy;
    /* a wavefront's recurrence waits for every rank before it */
    out->gemv_s *= 1 + cost->serial_ranks;
    out->compute_s =
        out->gemm_s + out->gemv_s + out->attn_s + out->fft_s + out->memory_s + out->transcendental_s;

    /* The SP group is consecutive ranks: it leaves the node only when it is larger than one. */
    double latency = 0, p2p_bw = 0;
    const int inter = strand_machine_link(m, nodes > 1 && shape->sp > ranks_per_node, &latency, &p2p_bw);
    double comm = cost->p2p_messages * latency + cost->p2p_bytes / p2p_bw;
    if (cost->alltoall_bytes > 0) {
        double a2a = cost->alltoall_bytes / m->alltoall_bytes_per_s;
        if (inter) {
            /* the off-node share of every rank of a node goes through one link */
            const double off = (double)(shape->sp - ranks_per_node) / shape->sp;
            a2a = max2(a2a, cost->alltoall_bytes * off * ranks_per_node / m->p2p_inter_bytes_per_s);
        }
        comm += a2a + cost->alltoall_count * (shape->sp - 1) * latency;
    }
    /* Ring attention: a step takes the larger of its compute and its transfer; only the excess of
     * the transfer is communication (overlap holds while compute >= transfer, i.e. c >= F/B). */
    if (cost->ring_steps > 0) {
        const double step_compute =
            cost->ring_flops_per_step / strand_machine_attn_flops_per_s(m, cost->attn_head_dim) * busy;
        const double step_transfer = latency + cost->ring_bytes_per_step / p2p_bw;
        out->ring_s = cost->ring_steps * max2(step_compute, step_transfer);
        comm += cost->ring_steps * max2(0, step_transfer - step_compute);
    }
    out->comm_s = comm;
}
