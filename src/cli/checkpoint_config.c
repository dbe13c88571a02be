/* The configuration a command that starts from a checkpoint runs with (grad, eval, sample). */
#include "cli.h"

#include "strand/ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int build(const char *given, const char *data, int argc, char **argv, char *path, size_t size,
                 strand_config *config, strand_ckpt_meta *meta) {
    int found = 0;
    STRAND_CALL(strand_ckpt_find(given, 1, NULL, NULL, 0, MPI_COMM_WORLD, path, size, meta, &found));
    STRAND_CALL(strand_ckpt_config(meta, config));
    config->sp = config->dp = 0; /* placed on this world unless --set says otherwise */
    if (data) snprintf(config->data_path, sizeof config->data_path, "%s", data);
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--set") == 0) STRAND_CALL(strand_config_set(config, argv[++i]));
    return STRAND_OK;
}

int cli_checkpoint_config(const char *given, const char *data, int argc, char **argv, char *path, size_t size,
                          strand_config *config) {
    strand_ckpt_meta *meta = malloc(sizeof *meta);
    int status = meta ? STRAND_OK : strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory");
    /* Every rank takes part in the checkpoint search, so the allocation is agreed first. */
    status = strand_agree(MPI_COMM_WORLD, status);
    if (status == STRAND_OK) status = build(given, data, argc, argv, path, size, config, meta);
    free(meta);
    return strand_agree(MPI_COMM_WORLD, status);
}
