/* strand train: parse options and configuration, then run the training loop (resuming from a
 * checkpoint when asked or when the run directory has one). */
#include "cli.h"

#include "strand/config.h"
#include "strand/dist.h"
#include "kernels/fftconv.h"
#include "strand/layout.h"
#include "strand/memory_model.h"
#include "train/metrics.h"
#include "strand/train.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_DRY_RUN_RANKS = 64 };

static void train_usage(FILE *out) {
    fprintf(out,
            "usage: mpirun -n N strand train [--config FILE] [--set section.key=value ...] [--quiet]\n"
            "                                [--resume PATH | --no-resume]\n"
            "       strand train --dry-run [--ranks N,N,...] [--config FILE] [--set ...]\n\n"
            "Trains a model with one window of train.seq_len tokens sharded over parallel.sp ranks\n"
            "(default: all ranks) and parallel.dp windows in parallel. Writes config.ini,\n"
            "metrics.jsonl (one JSON line per step), summary.json and checkpoints/ckpt-<step>.h5\n"
            "(every checkpoint.every steps and at the end) to run.dir. When run.dir holds a\n"
            "checkpoint, training resumes from the latest one.\n\n"
            "On SIGUSR1 or SIGTERM the ranks agree at the next step, write a checkpoint and exit\n"
            "with status 75 (preempted: start the same command again to resume). A signal during\n"
            "the final validation also exits 75 (the validation is redone on resume); signals after\n"
            "the first are absorbed.\n\n"
            "Every rank must be given the same configuration and options (the first difference is\n"
            "named). One job per run.dir: rank 0 locks <run.dir>/.lock, and a second job on the same\n"
            "run.dir is refused, naming the holder's host and pid.\n\n"
            "options:\n"
            "  --config FILE        INI configuration (sections [model] [train] [data] [parallel] [run])\n"
            "  --set KEY=VALUE      override one key, e.g. --set train.lr=3e-4 (repeatable; applied after\n"
            "                       the file, in order)\n"
            "  --quiet              no progress lines\n"
            "  --resume PATH        resume from a checkpoint file, or the latest checkpoint of a run\n"
            "                       directory or checkpoints directory (at any dp x sp)\n"
            "  --no-resume          start from step 0 even when run.dir holds checkpoints\n"
            "  --progress MODE      auto (a live bar when stdout is a terminal), bar, or plain lines;\n"
            "                       also STRAND_PROGRESS. mpirun hands ranks a terminal even when its\n"
            "                       output goes to a file: use plain in scripts\n"
            "  --dry-run            train nothing and write nothing: print the predicted peak memory of\n"
            "                       the most loaded rank (parameters, gradients, AdamW, activations,\n"
            "                       FFT and ring workspaces, ...) for the configured grid: the memory\n"
            "                       plan training allocates, built by the same code but not\n"
            "                       allocated (exact when run on the configured number of ranks);\n"
            "                       runs with or without mpirun; the dataset is not opened\n"
            "  --plan               with --dry-run: also list every buffer of the plan (rank 0's)\n"
            "  --ranks N,N,...      with --dry-run: also predict for SP = N (DP = 1) for each N, without\n"
            "                       running on N ranks\n"
            "  --help-config        print every configuration key with its default and meaning\n"
            "  --help               this text\n");
}

static int parse_progress(const char *text, int *mode) {
    if (strcmp(text, "auto") == 0)
        *mode = STRAND_PROGRESS_AUTO;
    else if (strcmp(text, "plain") == 0)
        *mode = STRAND_PROGRESS_PLAIN;
    else if (strcmp(text, "bar") == 0)
        *mode = STRAND_PROGRESS_BAR;
    else
        return -1;
    return 0;
}

/* "2,4,64" -> counts; -1 on anything but a list of at most MAX_DRY_RUN_RANKS positive ints. */
static int parse_ranks(const char *text, int *counts) {
    int n = 0;
    const char *p = text;
    while (n < MAX_DRY_RUN_RANKS) {
        char *end = NULL;
        errno = 0;
        const long value = strtol(p, &end, 10);
        if (end == p || errno != 0 || value < 1 || value > INT_MAX || (*end != ',' && *end != '\0'))
            return -1;
        counts[n++] = (int)value;
        if (*end == '\0') return n;
        p = end + 1;
    }
    return -1;
}

/* Short table headers, in enum strand_memory_component order. */
static const char *const dry_run_headers[STRAND_MEM_COMPONENTS] = {"params", "grads", "adamw",     "act",
                                                                   "blk_in", "head",  "d_scratch", "mixers",
                                                                   "fft",    "ring",  "data",      "base"};

static void print_dry_run_header(const strand_config *config, const strand_memory_report *r,
                                 int64_t baseline) {
    char now[32];
    strand_format_bytes(now, sizeof now, (double)baseline);
    printf("strand train --dry-run: predicted peak memory of the most loaded rank (%s build)\n",
           STRAND_REAL_NAME);
    printf("model: %s, d_model %d, %lld parameters, window %lld tokens, train.recompute = %s%s%s\n",
           config->layers, config->d_model, (long long)r->parameters, (long long)config->seq_len,
           r->shared_mixers ? "block" : "none", config->offload[0] ? ", offload to " : "", config->offload);
    printf("baseline %s: this process's resident memory now plus what training touches later\n", now);
    printf("%-26s %10s", "grid", "rows");
    for (int i = 0; i < STRAND_MEM_COMPONENTS; i++)
        printf(" %10s", dry_run_headers[i]);
    printf(" %10s\n", "total");
}

static void print_dry_run_row(const strand_memory_report *r, const char *label) {
    char grid[64], text[32];
    snprintf(grid, sizeof grid, "sp %d x dp %d%s", r->sp, r->dp, label);
    printf("%-26s %10lld", grid, (long long)r->rows);
    for (int i = 0; i < STRAND_MEM_COMPONENTS; i++) {
        strand_format_bytes(text, sizeof text, (double)r->bytes[i]);
        printf(" %10s", text);
    }
    strand_format_bytes(text, sizeof text, (double)r->total);
    printf(" %10s\n", text);
}

/* The machine-readable line tests parse. */
static void print_dry_run_line(const strand_memory_report *r) {
    printf("dry-run: sp=%d dp=%d rows=%lld layout=%s conv_strategy=%s parameters=%lld planned_bytes=%lld "
           "predicted_peak_bytes=%lld",
           r->sp, r->dp, (long long)r->rows, r->layout == STRAND_LAYOUT_ZIGZAG ? "zigzag" : "contiguous",
           r->conv_strategy ? strand_fftconv_strategy_name(r->conv_strategy) : "none",
           (long long)r->parameters, (long long)r->planned, (long long)r->total);
    for (int i = 0; i < STRAND_MEM_COMPONENTS; i++)
        printf(" %s=%lld", strand_memory_component_name(i), (long long)r->bytes[i]);
    printf("\n");
}

/* Validate as training does (config, grid against the world), then predict for the configured grid
 * and for SP = each of ranks[]. Nothing is allocated at model size and nothing is written. */
/* The configured grid on the ranks that run it: every rank plans its own shard (collectively), and
 * the most loaded rank's report is returned on rank 0. */
static int plan_here(const strand_config *config, strand_memory_report *out, int list) {
    strand_grid grid;
    STRAND_CALL(
        strand_agree(MPI_COMM_WORLD, strand_grid_init(&grid, MPI_COMM_WORLD, config->sp, config->dp)));
    strand_shard shard;
    int status = strand_agree(MPI_COMM_WORLD,
                              strand_shard_init(&shard, &grid, config->seq_len, strand_train_layout(config)));
    strand_plan plan;
    memset(&plan, 0, sizeof plan);
    if (status == STRAND_OK)
        status = strand_agree(MPI_COMM_WORLD, strand_memory_estimate_here(config, &shard, out, &plan));
    if (status == STRAND_OK && list && grid.world_rank == 0) strand_plan_print(&plan);
    strand_plan_free(&plan);
    if (status == STRAND_OK) {
        struct {
            long long total;
            int rank;
        } mine = {(long long)out->total, grid.world_rank}, most;
        status = MPI_Allreduce(&mine, &most, 1, MPI_LONG_INT, MPI_MAXLOC, MPI_COMM_WORLD) == MPI_SUCCESS &&
                         MPI_Bcast(out, (int)sizeof *out, MPI_BYTE, most.rank, MPI_COMM_WORLD) == MPI_SUCCESS
                     ? STRAND_OK
                     : strand_error_set(STRAND_ERR_MPI, __FILE__, __LINE__, "dry run: MPI_Allreduce failed");
    }
    strand_shard_free(&shard);
    strand_grid_free(&grid);
    return status;
}

static int dry_run(const strand_config *config, const int *ranks, int n_ranks, int list) {
    const char *name = "train";
    int64_t baseline = 0;
    /* Measured first: the baseline is the process before any of strand's buffers. */
    int status = strand_memory_process_baseline(&baseline);
    if (status == STRAND_OK) status = strand_config_validate(config);
    if (strand_agree(MPI_COMM_WORLD, status) != STRAND_OK) return cli_report(name);
    strand_grid grid;
    status = strand_agree(MPI_COMM_WORLD, strand_grid_init(&grid, MPI_COMM_WORLD, config->sp, config->dp));
    const int sp = grid.sp_size, dp = grid.dp_size;
    strand_grid_free(&grid);
    if (status != STRAND_OK) return cli_report(name);
    long long worst = (long long)baseline; /* the most loaded rank's: a maximum over the world */
    const int mpi = MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    if (mpi != MPI_SUCCESS) {
        strand_mpi_error(mpi, "MPI_Allreduce", __FILE__, __LINE__);
        return cli_report(name);
    }
    strand_memory_report reports[1 + MAX_DRY_RUN_RANKS];
    /* The configured grid is this world: planned exactly, on its ranks; --ranks grids estimated. */
    if (plan_here(config, &reports[0], list) != STRAND_OK) return cli_report(name);
    for (int i = 1; i <= n_ranks; i++) {
        /* Pure and identical on every rank, so failures need no vote. */
        if (strand_memory_estimate(config, i == 0 ? sp : ranks[i - 1], i == 0 ? dp : 1, &reports[i]) !=
            STRAND_OK) {
            if (i == 0) return cli_report(name);
            cli_error(name, "--ranks %d: %s", ranks[i - 1], strand_error_message());
            return CLI_FAILURE;
        }
    }
    for (int i = 0; i <= n_ranks; i++)
        strand_memory_set_baseline(&reports[i], (int64_t)worst);
    if (cli_world_rank() != 0) return CLI_OK;
    print_dry_run_header(config, &reports[0], (int64_t)worst);
    for (int i = 0; i <= n_ranks; i++)
        print_dry_run_row(&reports[i], i == 0 ? " (configured)" : "");
    for (int i = 1; i <= n_ranks; i++)
        if (reports[i].conv_strategy == STRAND_CONV_FFTW_MPI) {
            printf("note: with fftw-mpi, FFTW-MPI's local size is estimated as ceil(N/sp) per column for the "
                   "--ranks grids\n");
            break;
        }
    for (int i = 0; i <= n_ranks; i++)
        print_dry_run_line(&reports[i]);
    fflush(stdout);
    return CLI_OK;
}

int cmd_train(int argc, char **argv) {
    const char *name = "train";
    strand_config config;
    strand_config_defaults(&config);
    strand_train_options options = {0};
    const char *config_path = NULL;
    int dry = 0, list_plan = 0, n_ranks = 0, ranks[MAX_DRY_RUN_RANKS];
    const char *progress_env = getenv("STRAND_PROGRESS");
    if (progress_env && parse_progress(progress_env, &options.progress) != 0) {
        cli_error(name, "STRAND_PROGRESS = '%s': expected auto, bar or plain", progress_env);
        return CLI_USAGE;
    }
    /* Flags first (usage errors are identical on every rank, so no vote is needed). */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            if (cli_world_rank() == 0) train_usage(stdout);
            return CLI_OK;
        } else if (strcmp(argv[i], "--help-config") == 0) {
            if (cli_world_rank() == 0) strand_config_print_reference(stdout);
            return CLI_OK;
        } else if (strcmp(argv[i], "--progress") == 0) {
            if (i + 1 >= argc || parse_progress(argv[i + 1], &options.progress) != 0) {
                cli_error(name, "--progress needs auto, bar or plain");
                return CLI_USAGE;
            }
            i++;
        } else if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "--set") == 0) {
            if (i + 1 >= argc) {
                cli_error(name, "%s needs a value (see strand train --help)", argv[i]);
                return CLI_USAGE;
            }
            if (strcmp(argv[i], "--config") == 0) config_path = argv[i + 1];
            i++;
        } else if (strcmp(argv[i], "--resume") == 0) {
            if (i + 1 >= argc) {
                cli_error(name, "--resume needs a checkpoint file or directory");
                return CLI_USAGE;
            }
            options.resume = argv[++i];
        } else if (strcmp(argv[i], "--no-resume") == 0) {
            options.no_auto_resume = 1;
        } else if (strcmp(argv[i], "--quiet") == 0) {
            options.quiet = 1;
        } else if (strcmp(argv[i], "--dry-run") == 0) {
            dry = 1;
        } else if (strcmp(argv[i], "--plan") == 0) {
            list_plan = 1;
        } else if (strcmp(argv[i], "--ranks") == 0) {
            if (i + 1 >= argc || (n_ranks = parse_ranks(argv[i + 1], ranks)) < 0) {
                cli_error(name,
                          "--ranks needs a comma-separated list of at most %d positive rank counts, "
                          "e.g. --ranks 2,4,64",
                          MAX_DRY_RUN_RANKS);
                return CLI_USAGE;
            }
            i++;
        } else {
            cli_error(name, "unknown option '%s' (see strand train --help)", argv[i]);
            return CLI_USAGE;
        }
    }
    if (n_ranks > 0 && !dry) {
        cli_error(name, "--ranks only applies to --dry-run");
        return CLI_USAGE;
    }
    if (list_plan && !dry) {
        cli_error(name, "--plan only applies to --dry-run");
        return CLI_USAGE;
    }
    /* From here to the exit a SIGUSR1/SIGTERM is recorded, never fatal: one during start-up
     * preempts at the first step, and later ones cannot turn exit 75 into a death by signal. */
    if (!dry) strand_train_catch_signals();
    /* The file may be missing on one node only: agree before going on. */
    int status = config_path ? strand_config_load_file(&config, config_path) : STRAND_OK;
    for (int i = 1; i < argc && status == STRAND_OK; i++) {
        if (strcmp(argv[i], "--config") == 0)
            i++;
        else if (strcmp(argv[i], "--set") == 0)
            status = strand_config_set(&config, argv[++i]);
    }
    if (strand_agree(MPI_COMM_WORLD, status) != STRAND_OK) return cli_report(name);
    if (dry) return dry_run(&config, ranks, n_ranks, list_plan);
    if (options.resume && options.no_auto_resume) {
        cli_error(name, "--resume and --no-resume exclude each other");
        return CLI_USAGE;
    }
    options.handle_signals = 1;
    strand_train_result result;
    int code = CLI_OK;
    if (strand_train(&config, MPI_COMM_WORLD, &options, &result) != STRAND_OK) {
        code = cli_report(name);
    } else if (result.preempted) {
        if (cli_world_rank() == 0) {
            /* After the last step: its checkpoint was written before the validation started, or
             * the run resumed from it. */
            const char *checkpoint = result.checkpoint[0] ? result.checkpoint : result.resumed_from;
            if (result.preempted_in_validation)
                printf(
                    "preempted during the final validation after step %lld of %lld: checkpoint %s holds the "
                    "trained model; run the same command again to redo the validation and finish (exit %d)\n",
                    (long long)result.end_step, (long long)result.steps, checkpoint, STRAND_EXIT_PREEMPTED);
            else
                printf(
                    "preempted after step %lld of %lld: checkpoint %s written; run the same command again to "
                    "resume (exit %d)\n",
                    (long long)result.end_step, (long long)result.steps, checkpoint, STRAND_EXIT_PREEMPTED);
            fflush(stdout);
        }
        code = STRAND_EXIT_PREEMPTED;
    }
    /* Test hook: stay a while between training and the exit, so that tests can signal there. */
    const char *exit_sleep = getenv("STRAND_FAULT_EXIT_SLEEP");
    if (exit_sleep) strand_sleep(atof(exit_sleep));
    return code;
}
