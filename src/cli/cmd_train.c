/* strand train: parse options and configuration, then run the training loop (resuming from a
 * checkpoint when asked or when the run directory has one). */
#include "cli.h"

#include "strand/config.h"
#include "strand/metrics.h"
#include "strand/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void train_usage(FILE *out) {
    fprintf(out,
            "usage: mpirun -n N strand train [--config FILE] [--set section.key=value ...] [--quiet]\n"
            "                                [--resume PATH | --no-resume]\n\n"
            "Trains a model with one window of train.seq_len tokens sharded over parallel.sp ranks\n"
            "(default: all ranks) and parallel.dp windows in parallel. Writes config.ini,\n"
            "metrics.jsonl (one JSON line per step), summary.json and checkpoints/ckpt-<step>.h5\n"
            "(every checkpoint.every steps and at the end) to run.dir. When run.dir holds a\n"
            "checkpoint, training resumes from the latest one.\n\n"
            "On SIGUSR1 or SIGTERM the ranks agree at the next step, write a checkpoint and exit\n"
            "with status 75 (preempted: start the same command again to resume).\n\n"
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

int cmd_train(int argc, char **argv) {
    const char *name = "train";
    strand_config config;
    strand_config_defaults(&config);
    strand_train_options options = {0};
    const char *config_path = NULL;
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
        } else {
            cli_error(name, "unknown option '%s' (see strand train --help)", argv[i]);
            return CLI_USAGE;
        }
    }
    /* The file may be missing on one node only: agree before going on. */
    int status = config_path ? strand_config_load_file(&config, config_path) : STRAND_OK;
    for (int i = 1; i < argc && status == STRAND_OK; i++) {
        if (strcmp(argv[i], "--config") == 0)
            i++;
        else if (strcmp(argv[i], "--set") == 0)
            status = strand_config_set(&config, argv[++i]);
    }
    if (strand_agree(MPI_COMM_WORLD, status) != STRAND_OK) return cli_report(name);
    if (options.resume && options.no_auto_resume) {
        cli_error(name, "--resume and --no-resume exclude each other");
        return CLI_USAGE;
    }
    options.handle_signals = 1;
    strand_train_result result;
    if (strand_train(&config, MPI_COMM_WORLD, &options, &result) != STRAND_OK) return cli_report(name);
    if (result.preempted) {
        if (cli_world_rank() == 0) {
            printf("preempted after step %lld of %lld: checkpoint %s written; run the same command again to "
                   "resume (exit %d)\n",
                   (long long)result.end_step, (long long)result.steps, result.checkpoint,
                   STRAND_EXIT_PREEMPTED);
            fflush(stdout);
        }
        return STRAND_EXIT_PREEMPTED;
    }
    return CLI_OK;
}
