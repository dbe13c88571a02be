#define _POSIX_C_SOURCE 200809L /* setenv, unsetenv */
/* strand: one binary, subcommands dispatched from a table (like git's builtins). */
#include "cli.h"

#include "strand/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cblas.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
    {"prep", cmd_prep, "convert FASTA / gzipped FASTA genomes to an HDF5 dataset"},
    {"train", cmd_train, "train a model, the sequence sharded across MPI ranks"},
    {"info", cmd_info, "summarise a dataset, checkpoint or gradient file"},
    {"export", cmd_export, "decode a dataset back to its bases as FASTA (any tokenizer)"},
    {"eval", cmd_eval, "bits per base of a checkpoint on the validation split, loss by position"},
    {"sample", cmd_sample, "generate bases after a prompt with a checkpoint's model"},
    {"grad", cmd_grad, "loss and gradients of one training step from a checkpoint"},
    {"probe", cmd_probe, "probes of a checkpoint's model: the span Jacobian of a recurrent block"},
    {"bench", cmd_bench, "micro-benchmarks of the distributed kernels (one JSON line)"},
    {"plan", cmd_plan, "predicted step time and memory per rank of a configuration over rank counts"},
    {"calibrate", cmd_calibrate, "measure this machine's constants for the performance model (JSON)"},
};
enum { N_COMMANDS = sizeof commands / sizeof *commands };

int cli_world_rank(void) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}

void cli_error(const char *name, const char *fmt, ...) {
    if (cli_world_rank() != 0) return;
    char text[2048], line[4096];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    /* One line whatever the message quotes (an argument with a newline, say). */
    strand_one_line(line, sizeof line, text);
    fprintf(stderr, "strand %s: error: %s\n", name, line);
    fflush(stderr);
}

int cli_missing_value(const char *name, const char *opt, const char *const *known) {
    for (const char *const *k = known; *k; k++)
        if (strcmp(opt, *k) == 0) {
            cli_error(name, "option '%s' needs a value (see --help)", opt);
            return CLI_USAGE;
        }
    cli_error(name, "unknown option '%s' (see --help)", opt);
    return CLI_USAGE;
}

int cli_report(const char *name) {
    cli_error(name, "%s", strand_error_message()[0] ? strand_error_message() : "failed");
    return CLI_FAILURE;
}

static void usage(FILE *out) {
    fprintf(out,
            "strand %s: train genome-length sequence models on CPU clusters, one sequence sharded\n"
            "along its length across MPI ranks.\n\n"
            "usage: strand <command> [options]      (under MPI: mpirun -n N strand train ...)\n\n"
            "commands:\n",
            STRAND_VERSION);
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "\n'strand <command> --help' describes a command's options.\n"
                 "options: --help, --version\n");
}

/* OpenBLAS picks its kernels from the CPU model when it loads. On a model it does not know (virtual
 * machines often report a generic "Intel Xeon Processor") it falls back to Prescott's SSE3
 * kernels: sgemm ran at 23 GFLOP/s here against 82 with its AVX-512 (SkylakeX) ones. When
 * OPENBLAS_CORETYPE is unset and that happened, strand starts itself again, before MPI, with the
 * kernels the CPU's features allow. A set OPENBLAS_CORETYPE (any value) is kept, and
 * STRAND_KEEP_BLAS_CORE=1 keeps OpenBLAS's own choice. */
static void choose_blas_core(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || getenv("STRAND_KEEP_BLAS_CORE")) return;
    const char *core = openblas_get_corename();
    if (!core || strcasecmp(core, "Prescott") != 0) return;
    __builtin_cpu_init();
    const char *better = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        better = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        better = "Haswell";
    if (!better || setenv("OPENBLAS_CORETYPE", better, 1) != 0) return;
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE"); /* could not start again: carry on with the kernels loaded */
}

int main(int argc, char **argv) {
    choose_blas_core(argv);
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "strand: error: MPI_Init failed\n");
        return 1;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int status = CLI_USAGE;
    int rank = cli_world_rank();
    if (argc < 2) {
        if (rank == 0) usage(stderr);
    } else if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        if (rank == 0) usage(stdout);
        status = CLI_OK;
    } else if (strcmp(argv[1], "--version") == 0) {
        if (rank == 0) printf("strand %s (%s precision)\n", STRAND_VERSION, STRAND_REAL_NAME);
        status = CLI_OK;
    } else {
        const command *found = NULL;
        for (int i = 0; i < N_COMMANDS; i++)
            if (strcmp(argv[1], commands[i].name) == 0) found = &commands[i];
        if (found) {
            status = found->run(argc - 1, argv + 1);
        } else if (rank == 0) {
            char shown[512];
            strand_one_line(shown, sizeof shown, argv[1]);
            fprintf(stderr, "strand: error: unknown command '%s' (commands:", shown);
            for (int i = 0; i < N_COMMANDS; i++)
                fprintf(stderr, " %s", commands[i].name);
            fprintf(stderr, "; see strand --help)\n");
        }
    }
    fflush(stdout);
    MPI_Finalize();
    return status;
}
