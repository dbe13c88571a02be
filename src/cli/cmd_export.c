/* `strand export DATA.h5 [--out FILE.fa]`: a dataset's records decoded back to bases, as FASTA.
 * Serial: under mpirun only world rank 0 reads and writes, and the outcome is agreed. */
#include "cli.h"
#include "strand/dataset.h"

#include <stdio.h>
#include <string.h>

static const char export_usage[] =
    "usage: strand export DATA.h5 [--out FILE.fa]\n"
    "\n"
    "Decode every record of a dataset (any tokenizer) back to its bases and write them as FASTA:\n"
    "one '>name' line per record, 80 bases a line, to FILE.fa (written whole, then renamed) or\n"
    "to standard output. IUPAC codes other than ACGT read as N, as strand prep stored them.\n";

static int export_to(const char *path, const char *out_path) {
    if (!out_path) return strand_dataset_export(path, stdout);
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", out_path) >= (int)sizeof tmp)
        STRAND_FAIL(STRAND_ERR_INPUT, "--out: path too long");
    FILE *f = fopen(tmp, "w");
    if (!f) STRAND_FAIL(STRAND_ERR_IO, "%s: cannot create the file", tmp);
    int status = strand_dataset_export(path, f);
    if (fclose(f) != 0 && status == STRAND_OK)
        status = strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__, "%s: cannot write (disk full?)", tmp);
    if (status == STRAND_OK && rename(tmp, out_path) != 0)
        status = strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__, "cannot rename %s to %s", tmp, out_path);
    if (status != STRAND_OK) remove(tmp);
    return status;
}

int cmd_export(int argc, char **argv) {
    int rank = cli_world_rank();
    const char *path = NULL, *out_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            if (rank == 0) fputs(export_usage, stdout);
            return CLI_OK;
        }
        if (strcmp(argv[i], "--out") == 0) {
            if (i + 1 >= argc || !argv[i + 1][0]) {
                cli_error("export", "--out needs a path (see strand export --help)");
                return CLI_USAGE;
            }
            out_path = argv[++i];
            continue;
        }
        const char *problem = argv[i][0] == '-' && argv[i][1] != '\0' ? "unknown option"
                              : path                                  ? "unexpected argument"
                                                                      : NULL;
        if (problem) {
            cli_error("export", "%s '%s' (see strand export --help)", problem, argv[i]);
            return CLI_USAGE;
        }
        path = argv[i];
    }
    if (!path) {
        cli_error("export", "no dataset given (usage: strand export DATA.h5 [--out FILE.fa])");
        return CLI_USAGE;
    }
    int status = rank == 0 ? export_to(path, out_path) : STRAND_OK;
    fflush(stdout);
    status = strand_agree(MPI_COMM_WORLD, status);
    return status == STRAND_OK ? CLI_OK : cli_report("export");
}
