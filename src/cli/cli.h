/* Subcommands of the strand binary: each takes (argc, argv) with argv[0] the command name and
 * returns the process exit status (0 success, 1 failure, 2 usage error). MPI is initialised by
 * main before dispatch. */
#ifndef STRAND_CLI_H
#define STRAND_CLI_H

enum { CLI_OK = 0, CLI_FAILURE = 1, CLI_USAGE = 2 };

int cmd_prep(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_probe(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);

/* strand bench <kernel> entries (src/cli/bench_<kernel>.c) */
int bench_attn(int argc, char **argv);
int bench_conv(int argc, char **argv);
int bench_mixer(int argc, char **argv);
int bench_rnn(int argc, char **argv);
int bench_scan(int argc, char **argv);
int bench_train(int argc, char **argv);

/* Print "strand <command>: error: <message>" once (world rank 0 only). */
void cli_error(const char *command, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The error for option `opt` left without its value at the end of the line: "needs a value" when
 * it is one of `known` (NULL-terminated), "unknown option" otherwise. Returns CLI_USAGE. */
int cli_missing_value(const char *command, const char *opt, const char *const *known);
/* Print the last strand error as one line (world rank 0 only) and return CLI_FAILURE. */
int cli_report(const char *command);
int cli_world_rank(void);

#include "strand/config.h"
/* Resolve a checkpoint argument (a file, or a run or checkpoints directory: its latest) and build
 * the configuration a command runs with: the checkpoint's, placed on this world (sp and dp
 * derived), the dataset replaced when data is not NULL, then every `--set KEY=VALUE` in argv.
 * Collective; the status is agreed. */
int cli_checkpoint_config(const char *given, const char *data, int argc, char **argv, char *path, size_t size,
                          strand_config *config);

#endif
