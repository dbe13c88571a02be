/* `strand info FILE`: describe a strand dataset, checkpoint or gradient file. Serial: under mpirun only world
 * rank 0 reads the file and the outcome is agreed. */
#include "cli.h"
#include "strand/ckpt.h"
#include "strand/dataset.h"
#include "core/filesum.h"

#include <stdio.h>
#include <string.h>

static const char info_usage[] =
    "usage: strand info FILE\n"
    "\n"
    "Describe a strand dataset (from strand prep): format and tokenizer, records,\n"
    "train/val split, source files with their SHA-256, and base composition.\n"
    "Or a checkpoint (from strand train): step, tokens seen, configuration summary, the grid\n"
    "it was written at, and every tensor with its shape; or a gradient file (strand grad).\n";

static int describe(const char *path) {
    /* Every stored byte is verified before HDF5 parses any of it. */
    strand_filesum_info sum;
    STRAND_CALL(strand_filesum_verify(path, &sum));
    int is_dataset = 0;
    STRAND_CALL(strand_dataset_probe(path, &is_dataset));
    if (is_dataset) return strand_dataset_print_info(path);
    int kind = 0;
    STRAND_CALL(strand_ckpt_probe(path, &kind));
    if (kind) return strand_ckpt_print_info(path);
    STRAND_FAIL(STRAND_ERR_INPUT,
                "%s: not a strand dataset (an HDF5 file without the root attribute "
                "'format_version' and /tokens) nor a checkpoint (root attribute 'kind')",
                path);
}

int cmd_info(int argc, char **argv) {
    int rank = cli_world_rank();
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            if (rank == 0) fputs(info_usage, stdout);
            return CLI_OK;
        }
        const char *problem = argv[i][0] == '-' && argv[i][1] != '\0' ? "unknown option"
                              : path                                  ? "unexpected argument"
                                                                      : NULL;
        if (problem) {
            cli_error("info", "%s '%s' (see strand info --help)", problem, argv[i]);
            return CLI_USAGE;
        }
        path = argv[i];
    }
    if (!path) {
        cli_error("info", "no file given (usage: strand info FILE)");
        return CLI_USAGE;
    }
    int status = rank == 0 ? describe(path) : STRAND_OK;
    fflush(stdout);
    status = strand_agree(MPI_COMM_WORLD, status);
    return status == STRAND_OK ? CLI_OK : cli_report("info");
}
