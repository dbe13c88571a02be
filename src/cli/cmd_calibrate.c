/* strand calibrate: measure this machine's constants (BLAS, FFTW, the attention kernel, memory,
 * MPI, parallel HDF5) and write them as the JSON machine file that `strand plan --machine` reads. */
#include "cli.h"

#include "strand/perf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef STRAND_REAL_DOUBLE
#define GEMM_NAME "dgemm"
#define GEMV_NAME "dgemv"
#else
#define GEMM_NAME "sgemm"
#define GEMV_NAME "sgemv"
#endif

static void calibrate_usage(FILE *out) {
    fprintf(out, "usage: mpirun -n N strand calibrate [--out FILE] [--dir DIR] [--io-bytes N] [--quick]\n\n"
                 "Measures this machine's constants for strand's performance model and writes them as JSON\n"
                 "(the machine file of strand plan --machine): " GEMM_NAME " and " GEMV_NAME
                 " rates, GEMMs of the MLP's\n"
                 "shape by width, FFTW transforms by size, the attention tile kernel by head dim, a memory\n"
                 "triad and libm calls (on rank 0 while the others wait); ping-pong within a node and\n"
                 "across nodes, an all-to-all over every rank, and a parallel HDF5 write and read. Every\n"
                 "timing is the median of repeats after a warm-up. Run it with the ranks per node that\n"
                 "training will use; with one rank the MPI rates are defaults.\n\n"
                 "options:\n"
                 "  --out FILE      machine file to write (default machine.json; replaced atomically)\n"
                 "  --dir DIR       directory of the HDF5 test file, shared by every rank (default: the\n"
                 "                  current directory; the file is removed afterwards)\n"
                 "  --io-bytes N    HDF5 bytes per rank (default 64 MiB, --quick 4 MiB; at most 1 GiB)\n"
                 "  --quick         smaller sizes and fewer repeats (seconds, for tests)\n");
}

static void print_table(const char *label, const double *x, const double *y, int n, double scale,
                        const char *unit) {
    printf("%-26s", label);
    for (int i = 0; i < n; i++)
        printf("%s%.0f: %.3g", i ? ", " : "", x[i], y[i] * scale);
    printf(" %s\n", unit);
}

static void print_summary(const strand_machine *m, const char *out) {
    printf("machine: %s, %s build, %d rank(s) on %d node(s), %d cores and %.1f GiB per node\n", m->host,
           m->precision, m->ranks, m->nodes, m->cores_per_node,
           m->memory_per_node_bytes / (1024.0 * 1024 * 1024));
    printf("%-26s%.3g GFLOP/s\n", GEMM_NAME " square:", m->sgemm_gflops);
    printf("%-26s%.3g GFLOP/s\n", GEMV_NAME " 4096 x 1024:", m->sgemv_gflops);
    print_table("gemm (M, w) x (w, 4w):", m->gemm_width, m->gemm_gflops, STRAND_MACHINE_GEMM_WIDTHS, 1,
                "GFLOP/s");
    print_table("fft real, per point:", m->fft_size, m->fft_real_s_per_point, STRAND_MACHINE_FFT_SIZES, 1e9,
                "ns");
    print_table("fft complex, per point:", m->fft_size, m->fft_complex_s_per_point, STRAND_MACHINE_FFT_SIZES,
                1e9, "ns");
    print_table("attention by head dim:", m->attn_head_dim, m->attn_gflops, STRAND_MACHINE_ATTN_DIMS, 1,
                "GFLOP/s");
    printf("%-26s%.3g GB/s\n", "memory triad:", m->memory_bytes_per_s / 1e9);
    printf("%-26s%.3g GB/s over %d rank(s) at once\n",
           "memory triad, node:", m->memory_node_bytes_per_s / 1e9, m->memory_node_ranks);
    printf("%-26s%.3g of one rank's GEMM rate with %d rank(s) busy\n",
           "compute, node:", m->compute_node_factor, m->memory_node_ranks);
    printf("%-26s%.3g per s\n", "expf, sinf, tanhf:", m->transcendentals_per_s);
    printf("%-26slatency %.3g us, %.3g GB/s\n", "p2p in a node:", m->p2p_latency_s * 1e6,
           m->p2p_bytes_per_s / 1e9);
    if (m->p2p_inter_bytes_per_s > 0)
        printf("%-26slatency %.3g us, %.3g GB/s\n", "p2p across nodes:", m->p2p_inter_latency_s * 1e6,
               m->p2p_inter_bytes_per_s / 1e9);
    else
        printf("%-26snot measured (one node)\n", "p2p across nodes:");
    printf("%-26s%.3g GB/s sent per rank over %d rank(s)\n", "all-to-all:", m->alltoall_bytes_per_s / 1e9,
           m->alltoall_ranks);
    printf("%-26swrite %.3g GB/s, read %.3g GB/s (%s)\n", "parallel HDF5:", m->hdf5_write_bytes_per_s / 1e9,
           m->hdf5_read_bytes_per_s / 1e9, m->io_dir);
    printf("wrote %s\n", out);
}

int cmd_calibrate(int argc, char **argv) {
    const char *name = "calibrate";
    const char *out = "machine.json";
    strand_calibrate_options options = {".", 0, 0};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            if (cli_world_rank() == 0) calibrate_usage(stdout);
            return CLI_OK;
        } else if (strcmp(arg, "--quick") == 0) {
            options.quick = 1;
        } else if (strcmp(arg, "--out") == 0 || strcmp(arg, "--dir") == 0 || strcmp(arg, "--io-bytes") == 0) {
            if (i + 1 >= argc) {
                cli_error(name, "%s needs a value (see strand calibrate --help)", arg);
                return CLI_USAGE;
            }
            const char *value = argv[++i];
            if (strcmp(arg, "--out") == 0) out = value;
            if (strcmp(arg, "--dir") == 0) options.io_dir = value;
            if (strcmp(arg, "--io-bytes") == 0) {
                char *end = NULL;
                long long n = strtoll(value, &end, 10);
                if (!*value || *end || n < 1 || n > (1LL << 30)) {
                    cli_error(name, "--io-bytes needs a byte count from 1 to 1073741824 (1 GiB), not '%s'",
                              value);
                    return CLI_USAGE;
                }
                options.io_bytes_per_rank = n;
            }
        } else {
            cli_error(name, "unknown option '%s' (see strand calibrate --help)", arg);
            return CLI_USAGE;
        }
    }
    if (!*out || !*options.io_dir) {
        cli_error(name, "--out and --dir need a non-empty name");
        return CLI_USAGE;
    }
    strand_machine machine;
    if (strand_calibrate(MPI_COMM_WORLD, &options, &machine) != STRAND_OK) return cli_report(name);
    const int rank = cli_world_rank();
    int status = rank == 0 ? strand_machine_write(out, &machine) : STRAND_OK;
    status = strand_agree(MPI_COMM_WORLD, status);
    if (status != STRAND_OK) return cli_report(name);
    if (rank == 0) print_summary(&machine, out);
    fflush(stdout);
    return CLI_OK;
}
