/* The arithmetic of `strand calibrate` (src/perf/calibrate.c) and of the machine's table lookups
 * (src/perf/machine.c), apart from the measurements so that tests can check it by hand. Times are
 * seconds; rates per second (GFLOP/s where the name says so). */
#ifndef STRAND_CALIBRATE_FORMULAS_H
#define STRAND_CALIBRATE_FORMULAS_H

#include <stdint.h>

/* Median of v[n] (n >= 1; sorts v): the middle value, or the mean of the middle two. */
double strand_cal_median(double *v, int n);

/* GFLOP/s of C (m x n) = A (m x k) B (k x n) in `seconds`: 2 m n k multiply-adds counted as flops. */
double strand_cal_gemm_gflops(double m, double n, double k, double seconds);
/* GFLOP/s of `repeats` products y = A x with A (m x n): 2 m n flops each. */
double strand_cal_gemv_gflops(double m, double n, double repeats, double seconds);

/* Seconds per point of one transform from `seconds` for `pairs` forward + inverse pairs of n
 * points: seconds / (2 pairs n). */
double strand_cal_fft_s_per_point(double seconds, double n, double pairs);

/* Causal attention FLOPs of forward + backward, as `strand bench ring` counts them: 4 e h per
 * visible query-key pair forward, L (L + 1) / 2 pairs, backward 2.5x the forward. */
double strand_cal_attn_flops(int64_t length, int heads, int head_dim);

/* Bytes per second of a triad over n elements of `element_bytes`: 3 arrays (2 read, 1 written). */
double strand_cal_triad_bytes_per_s(double n, double element_bytes, double seconds);

/* Bytes each rank sends to the other ranks per second in an all-to-all of `bytes_per_peer` to
 * each of `ranks` ranks (itself excluded: that copy is local). */
double strand_cal_alltoall_bytes_per_s(double bytes_per_peer, int ranks, double seconds);

/* Two-point fit of the one-way time t(b) = latency + b / bandwidth from round trips (rtt, two
 * one-way messages each) of a small and a large message. A large message that is not slower than
 * the small one (noise) gives bandwidth = large / its one-way time and the small one's latency. */
void strand_cal_pingpong_fit(double small_bytes, double small_rtt_s, double large_bytes, double large_rtt_s,
                             double *latency_s, double *bytes_per_s);

/* y at `at` from the table (x[i], y[i]), x increasing: linear in log x between points, clamped to
 * y[0] below x[0] and to y[n-1] above x[n-1]. */
double strand_cal_interp_log(const double *x, const double *y, int n, double at);

/* The node's compute factor: the mean rate of a rank among busy ones over one rank's rate alone,
 * at most 1 (a faster concurrent run is noise, not a speed-up). */
double strand_cal_node_factor(double alone, double together);

#endif
