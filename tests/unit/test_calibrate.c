/* strand calibrate's arithmetic against hand-computed numbers, the machine file's round trip, and
 * its refusals (each naming the file). No measurement runs here: tests/cli/test_calibrate_cli.sh
 * runs the command. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "test_util.h"
#include "test_tmpdir.h"

#include "strand/perf.h"
#include "perf/calibrate_formulas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256];

static void path_of(char *out, size_t size, const char *name) {
    snprintf(out, size, "%s/%s", dir, name);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void test_formulas(void) {
    /* 2 M N K / t: 2 * 1000 * 2000 * 500 / 0.5 s = 4e9 flop/s = 4 GFLOP/s */
    CHECK_CLOSE(strand_cal_gemm_gflops(1000, 2000, 500, 0.5), 4.0, 1e-12);
    /* 2 * 4096 * 1024 * 10 / 0.01 s = 8.388608e9 */
    CHECK_CLOSE(strand_cal_gemv_gflops(4096, 1024, 10, 0.01), 8.388608, 1e-12);
    /* 1 ms for 4 pairs of 1024 points: 1e-3 / (2 * 4 * 1024) = 1.220703125e-7 s */
    CHECK_CLOSE(strand_cal_fft_s_per_point(1e-3, 1024, 4) * 1e9, 122.0703125, 1e-12);
    /* L = 4: 10 visible pairs; 3.5 * 4 * 10 * 2 heads * 8 dims = 2240 */
    CHECK_CLOSE(strand_cal_attn_flops(4, 2, 8), 2240.0, 1e-12);
    /* L = 1024, h = 2, e = 64: 3.5 * 4 * 524800 * 128 = 940441600 */
    CHECK_CLOSE(strand_cal_attn_flops(1024, 2, 64), 940441600.0, 1e-12);
    /* 3 * 1e6 * 4 B / 1e-3 s = 1.2e10 B/s */
    CHECK_CLOSE(strand_cal_triad_bytes_per_s(1e6, 4, 1e-3) / 1e10, 1.2, 1e-12);
    /* the node's compute factor: busy over alone, at most 1, 1 without a measurement */
    CHECK_CLOSE(strand_cal_node_factor(10, 8), 0.8, 1e-15);
    CHECK_CLOSE(strand_cal_node_factor(10, 12), 1, 0);
    CHECK_CLOSE(strand_cal_node_factor(0, 8), 1, 0);
    /* 4 ranks, 1 MiB to each of 3 others in 1 ms: 3 * 1048576 / 1e-3 = 3.145728e9 */
    CHECK_CLOSE(strand_cal_alltoall_bytes_per_s(1048576, 4, 1e-3) / 1e9, 3.145728, 1e-12);
    CHECK_CLOSE(strand_cal_alltoall_bytes_per_s(1048576, 2, 1e-3) / 1e9, 1.048576, 1e-12);

    /* t(b) = 1 us + b / 1e9: rtt(8) = 2 (1e-6 + 8e-9), rtt(4e6 + 8) = 2 (1e-6 + 4.000008e-3) */
    double lat = 0, bw = 0;
    strand_cal_pingpong_fit(8, 2 * (1e-6 + 8e-9), 4e6 + 8, 2 * (1e-6 + 4.000008e-3), &lat, &bw);
    CHECK_CLOSE(lat * 1e6, 1.0, 1e-9);
    CHECK_CLOSE(bw / 1e9, 1.0, 1e-9);
    /* noise: the large message no slower than the small one: latency = small one-way, bw = b / t */
    strand_cal_pingpong_fit(8, 4e-6, 1000, 4e-6, &lat, &bw);
    CHECK_CLOSE(lat * 1e6, 2.0, 1e-12);
    CHECK_CLOSE(bw / 1e6, 500.0, 1e-12);

    /* medians: odd, even, unsorted */
    double v3[] = {3, 1, 2}, v4[] = {4, 1, 3, 2}, v1[] = {7};
    CHECK_CLOSE(strand_cal_median(v3, 3), 2.0, 0);
    CHECK_CLOSE(strand_cal_median(v4, 4), 2.5, 0);
    CHECK_CLOSE(strand_cal_median(v1, 1), 7.0, 0);

    /* log interpolation: midpoints in log x, exact at the points, clamped outside */
    const double x[] = {16, 64, 256}, y[] = {10, 20, 50};
    CHECK_CLOSE(strand_cal_interp_log(x, y, 3, 32), 15.0, 1e-12);  /* log-midpoint of 16, 64 */
    CHECK_CLOSE(strand_cal_interp_log(x, y, 3, 128), 35.0, 1e-12); /* of 64, 256 */
    CHECK_CLOSE(strand_cal_interp_log(x, y, 3, 64), 20.0, 1e-12);
    CHECK_CLOSE(strand_cal_interp_log(x, y, 3, 16), 10.0, 1e-12);
    CHECK_CLOSE(strand_cal_interp_log(x, y, 3, 256), 50.0, 1e-12);
    CHECK_CLOSE(strand_cal_interp_log(x, y, 3, 1), 10.0, 0);
    CHECK_CLOSE(strand_cal_interp_log(x, y, 3, 0), 10.0, 0);
    CHECK_CLOSE(strand_cal_interp_log(x, y, 3, 1e6), 50.0, 0);
    /* a quarter of the way in log: 16 * 4^0.25 = 16 sqrt 2 */
    CHECK_CLOSE(strand_cal_interp_log(x, y, 3, 16 * sqrt(2.0)), 12.5, 1e-12);
}

static void test_lookups(void) {
    strand_machine m;
    strand_machine_default(&m);
    /* the defaults are documented round numbers */
    CHECK_CLOSE(m.sgemm_gflops, 50, 0);
    CHECK_CLOSE(m.p2p_latency_s, 1e-6, 0);
    CHECK_CLOSE(m.p2p_bytes_per_s, 5e9, 0);
    CHECK_CLOSE(m.memory_bytes_per_s, 1e10, 0);
    CHECK_CLOSE(m.hdf5_write_bytes_per_s, 1e9, 0);
    CHECK(strcmp(m.precision, STRAND_REAL_NAME) == 0);
    for (int i = 0; i < STRAND_MACHINE_FFT_SIZES; i++)
        CHECK(m.fft_real_s_per_point[i] > 0 && m.fft_complex_s_per_point[i] > 0);

    const double widths[] = {16, 32, 64, 128, 256, 512, 1024};
    for (int i = 0; i < STRAND_MACHINE_GEMM_WIDTHS; i++)
        m.gemm_width[i] = widths[i], m.gemm_gflops[i] = 10.0 * (i + 1);
    /* flop/s, not GFLOP/s; sqrt(16 * 32) is the log midpoint of the first two widths */
    CHECK_CLOSE(strand_machine_gemm_flops_per_s(&m, 16) / 1e9, 10.0, 1e-12);
    CHECK_CLOSE(strand_machine_gemm_flops_per_s(&m, sqrt(16.0 * 32.0)) / 1e9, 15.0, 1e-12);
    CHECK_CLOSE(strand_machine_gemm_flops_per_s(&m, 4) / 1e9, 10.0, 1e-12);
    CHECK_CLOSE(strand_machine_gemm_flops_per_s(&m, 4096) / 1e9, 70.0, 1e-12);

    const double sizes[] = {1024, 8192, 65536, 524288, 4194304};
    for (int i = 0; i < STRAND_MACHINE_FFT_SIZES; i++)
        m.fft_size[i] = sizes[i], m.fft_real_s_per_point[i] = 1e-9 * (i + 1),
        m.fft_complex_s_per_point[i] = 2e-9 * (i + 1);
    /* n * per point: 8192 * 2e-9; between 1024 and 8192 at 2^11.5 (a third of the way in log) */
    CHECK_CLOSE(strand_machine_fft_seconds(&m, 8192, 0), 8192 * 2e-9, 1e-12);
    CHECK_CLOSE(strand_machine_fft_seconds(&m, 8192, 1), 8192 * 4e-9, 1e-12);
    const double n = pow(2.0, 11.0);
    CHECK_CLOSE(strand_machine_fft_seconds(&m, n, 0) / (n * 1e-9), 1.0 + 1.0 / 3.0, 1e-12);
    CHECK_CLOSE(strand_machine_fft_seconds(&m, 1 << 24, 1), (1 << 24) * 10e-9, 1e-12); /* clamped */
    CHECK_CLOSE(strand_machine_fft_seconds(&m, 256, 0), 256 * 1e-9, 1e-12);

    m.attn_head_dim[0] = 32, m.attn_head_dim[1] = 64, m.attn_head_dim[2] = 128;
    m.attn_gflops[0] = 10, m.attn_gflops[1] = 20, m.attn_gflops[2] = 40;
    CHECK_CLOSE(strand_machine_attn_flops_per_s(&m, 64) / 1e9, 20.0, 1e-12);
    CHECK_CLOSE(strand_machine_attn_flops_per_s(&m, sqrt(64.0 * 128.0)) / 1e9, 30.0, 1e-12);
    CHECK_CLOSE(strand_machine_attn_flops_per_s(&m, 256) / 1e9, 40.0, 1e-12);
}

static void test_round_trip(void) {
    char path[512];
    path_of(path, sizeof path, "M.json");
    strand_machine a, b;
    strand_machine_default(&a);
    snprintf(a.host, sizeof a.host, "node-17");
    snprintf(a.io_dir, sizeof a.io_dir, "/scratch/x y");
    a.ranks = 8, a.nodes = 2, a.alltoall_ranks = 8;
    a.sgemm_gflops = 123.456789012345678;
    a.fft_real_s_per_point[3] = 3.3e-9;
    a.p2p_inter_latency_s = 2.5e-6, a.p2p_inter_bytes_per_s = 1.2e10;
    CHECK(strand_machine_write(path, &a) == STRAND_OK);
    memset(&b, 0, sizeof b);
    CHECK_MSG(strand_machine_read(path, &b) == STRAND_OK, "%s", strand_error_message());
    CHECK(memcmp(&a, &b, sizeof a) == 0); /* every field bit for bit (the struct was zeroed first) */
    CHECK(strcmp(b.host, "node-17") == 0 && strcmp(b.io_dir, "/scratch/x y") == 0);
    CHECK(b.sgemm_gflops == a.sgemm_gflops);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0); /* published, no temporary left */

    /* one node: inter-node fields 0 are fine */
    strand_machine_default(&a);
    CHECK(strand_machine_write(path, &a) == STRAND_OK);
    CHECK_MSG(strand_machine_read(path, &b) == STRAND_OK, "%s", strand_error_message());
    CHECK(b.p2p_inter_bytes_per_s == 0 && b.p2p_inter_latency_s == 0);

    /* a machine that could not be read back is not written */
    a.memory_bytes_per_s = -1;
    CHECK(strand_machine_write(path, &a) == STRAND_ERR_INPUT);
    CHECK(strstr(strand_error_message(), "memory_bytes_per_s") != NULL);
}

/* Read `text` as M.json: refused with STRAND_ERR_INPUT and a message with the file and `needle`. */
static void refused(const char *text, const char *needle) {
    char path[512];
    path_of(path, sizeof path, "M.json");
    write_file(path, text);
    strand_machine m;
    strand_machine_default(&m);
    m.ranks = 77;
    const int status = strand_machine_read(path, &m);
    const char *msg = strand_error_message();
    CHECK_MSG(status == STRAND_ERR_INPUT, "status %d for %s", status, needle);
    CHECK_MSG(strncmp(msg, path, strlen(path)) == 0 && strstr(msg, needle) != NULL, "'%s' lacks '%s'", msg,
              needle);
    CHECK(m.ranks == 77); /* untouched on failure */
}

/* The default machine's JSON with `key`'s value replaced by `value` (NULL: the key removed). */
static void edited(char *out, size_t size, const char *key, const char *value) {
    char path[512];
    path_of(path, sizeof path, "good.json");
    strand_machine m;
    strand_machine_default(&m);
    CHECK(strand_machine_write(path, &m) == STRAND_OK);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(out, 1, size - 1, f) : 0;
    if (f) fclose(f);
    out[n] = '\0';
    char pattern[128];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    char *at = strstr(out, pattern);
    CHECK_MSG(at != NULL, "no %s in the written file", key);
    if (!at) return;
    char *end = at + strlen(pattern);
    int depth = 0;
    while (*end && (depth > 0 || (*end != ',' && *end != '\n'))) {
        depth += *end == '[' ? 1 : *end == ']' ? -1 : 0;
        end++;
    }
    char rest[8192];
    snprintf(rest, sizeof rest, "%s", *end == ',' ? end + 1 : end);
    if (value)
        snprintf(at, size - (size_t)(at - out), "%s\t%s,%s", pattern, value, rest);
    else
        snprintf(at, size - (size_t)(at - out), "\"dropped_key\": 0,%s", rest);
}

static void test_refusals(void) {
    char text[8192];
    refused("{\"strand_machine\": 1, \"host\": ", "not JSON (at byte");
    refused("{\"strand_machine\": 1, \"host\": \"x\"} trailing", "not JSON (at byte");
    refused("[1, 2, 3]", "not a JSON object");
    refused("{\"host\": \"x\"}", "missing key strand_machine");
    refused("{\"strand_machine\": 2}", "format");
    edited(text, sizeof text, "sgemm_gflops", NULL);
    refused(text, "missing key sgemm_gflops");
    edited(text, sizeof text, "hdf5_read_bytes_per_s", NULL);
    refused(text, "missing key hdf5_read_bytes_per_s");
    edited(text, sizeof text, "memory_bytes_per_s", "-3");
    refused(text, "memory_bytes_per_s must be finite and > 0");
    edited(text, sizeof text, "p2p_bytes_per_s", "0");
    refused(text, "p2p_bytes_per_s must be finite and > 0");
    edited(text, sizeof text, "fft_size", "[1024, 8192, 8192, 524288, 4194304]");
    refused(text, "fft_size must increase");
    edited(text, sizeof text, "gemm_width", "[16, 32, 64]");
    refused(text, "gemm_width must be an array of 7 numbers");
    edited(text, sizeof text, "attn_gflops", "[1, -2, 3]");
    refused(text, "attn_gflops[1] must be finite and > 0");
    edited(text, sizeof text, "sgemv_gflops", "\"fast\"");
    refused(text, "sgemv_gflops is not a number");
    edited(text, sizeof text, "ranks", "0");
    refused(text, "ranks must be >= 1");
    edited(text, sizeof text, "p2p_inter_latency_s", "1e-6");
    refused(text, "p2p_inter_bytes_per_s must both be > 0");
    /* inter-node p2p of 0 is one node, not a refusal; a negative one is */
    edited(text, sizeof text, "p2p_inter_bytes_per_s", "-1");
    refused(text, "p2p_inter_bytes_per_s must be finite and >= 0");

    char missing[512];
    path_of(missing, sizeof missing, "absent.json");
    strand_machine m;
    CHECK(strand_machine_read(missing, &m) == STRAND_ERR_IO);
    CHECK(strstr(strand_error_message(), missing) != NULL);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    test_tmpdir_make(dir, (int)sizeof dir, "calibrate");
    CHECK(dir[0] != '\0');
    test_formulas();
    test_lookups();
    test_round_trip();
    test_refusals();
    test_tmpdir_remove(dir);
    const int status = test_finish("test_calibrate");
    MPI_Finalize();
    return status;
}
