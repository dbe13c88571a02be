/* Training and validation windows. Which window a step uses is a pure function of
 * (seed, step, window index), never of the SP size; each rank reads only its own piece. */
#ifndef STRAND_LOADER_H
#define STRAND_LOADER_H

#include "strand/dataset.h"
#include "strand/layout.h"

typedef struct {
    strand_dataset *dataset;
    int64_t seq_len;
    uint64_t seed;
    int rc_augment;
    /* valid window starts per range, cumulative: starts_cum[i] = starts in ranges 0..i-1 */
    int64_t *train_cum, *val_cum;
    int64_t train_starts, val_starts;
    /* Datasets with record_windows (task datasets): windows start only at record starts; these
     * list the starts (train_starts and val_starts of them). NULL otherwise. */
    int64_t *train_records, *val_records;
} strand_loader;

typedef struct {
    int64_t offset; /* first token of the window in /tokens (seq_len + 1 tokens: inputs and targets) */
    int reverse;    /* reverse-complement the window */
} strand_window;

/* Index the split ranges. Fails (identically on every rank) when no range holds seq_len + 1
 * tokens, naming both sizes. */
int strand_loader_init(strand_loader *loader, strand_dataset *dataset, int64_t seq_len, uint64_t seed,
                       int rc_augment);
void strand_loader_free(strand_loader *loader);
/* The training window for (step, window index). */
strand_window strand_loader_train_window(const strand_loader *loader, int64_t step, int64_t index);
/* Validation window k of n, evenly spaced over the validation ranges; returns 0 when the split
 * has no room for a window. */
int strand_loader_val_window(const strand_loader *loader, int64_t k, int64_t n, strand_window *window);
/* Whether `next` continues `previous` (NULL: nothing before): it starts where previous ended, in
 * the same reading direction (a reverse-complement window continues the one to its left). */
int strand_loader_continues(const strand_loader *loader, const strand_window *previous, strand_window next);
/* Read window positions [start, start + count] (count + 1 tokens: the inputs of the piece and the
 * target of its last position) into tokens. */
int strand_loader_read(const strand_loader *loader, strand_window window, int64_t start, int64_t count,
                       strand_token_t *tokens);
/* Loss weights of this rank's rows of a window (1 where the target counts, 0 where the dataset's
 * /loss_mask says it does not; all ones without a mask). */
int strand_loader_read_mask(const strand_loader *loader, strand_window window, const strand_shard *shard,
                            real_t *weights);
/* Read this rank's rows of a window, whatever the layout: inputs (T) and their next tokens,
 * targets (T). scratch holds max piece length + 1 tokens. */
int strand_loader_read_shard(const strand_loader *loader, strand_window window, const strand_shard *shard,
                             strand_token_t *inputs, strand_token_t *targets, strand_token_t *scratch);

#endif
