/* Window selection and the per-rank hyperslab read. */
#include "data/loader.h"

#include "core/rng.h"

#include <string.h>

static int index_ranges(const strand_token_range *ranges, int64_t n, int64_t seq_len, int64_t **cum_out,
                        int64_t *total) {
    int64_t *cum = strand_alloc(sizeof *cum * (size_t)(n + 1), "window index");
    if (!cum) return STRAND_ERR_NOMEM;
    cum[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t starts = ranges[i].length - seq_len; /* a window needs seq_len + 1 tokens */
        cum[i + 1] = cum[i] + (starts > 0 ? starts : 0);
    }
    *cum_out = cum;
    *total = cum[n];
    return STRAND_OK;
}

/* Record-aligned windows: the starts of the records inside `ranges` that hold seq_len tokens
 * (the target of a record's last position is not read: see strand_loader_read). */
static int index_records(const strand_dataset *ds, const strand_token_range *ranges, int64_t n,
                         int64_t seq_len, int64_t **starts_out, int64_t *total) {
    int64_t *starts = strand_alloc(sizeof *starts * (size_t)(ds->n_records + 1), "record window index");
    if (!starts) return STRAND_ERR_NOMEM;
    int64_t count = 0;
    for (int64_t r = 0, i = 0; r < ds->n_records && i < n;) {
        const int64_t offset = ds->record_offsets[r], end = ranges[i].offset + ranges[i].length;
        if (offset >= end) {
            i++;
        } else {
            if (offset >= ranges[i].offset && ds->record_lengths[r] >= seq_len && offset + seq_len <= end)
                starts[count++] = offset;
            r++;
        }
    }
    *starts_out = starts;
    *total = count;
    return STRAND_OK;
}

int strand_loader_init(strand_loader *loader, strand_dataset *dataset, int64_t seq_len, uint64_t seed,
                       int rc_augment) {
    loader->dataset = dataset;
    loader->seq_len = seq_len;
    loader->seed = seed;
    loader->rc_augment = rc_augment;
    loader->train_records = loader->val_records = NULL;
    loader->train_cum = loader->val_cum = NULL;
    /* The complement is a nucleotide operation: on a task's tokens it would change the task. */
    if (rc_augment && strand_dataset_is_task(dataset))
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "train.rc_augment = true, but %s holds task tokens (%s): set it to false", dataset->path,
                    dataset->tokenizer);
    /* A BPE token's reverse complement is in general no token of the vocabulary. */
    if (rc_augment && !dataset->codec.complement)
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "train.rc_augment = true, but the tokens of %s (%s) have no reverse complements in their "
                    "vocabulary: set it to false, or prep with --tokenizer nucleotide or kmer:K",
                    dataset->path, dataset->tokenizer);
    STRAND_CALL(
        index_ranges(dataset->train, dataset->n_train, seq_len, &loader->train_cum, &loader->train_starts));
    STRAND_CALL(index_ranges(dataset->val, dataset->n_val, seq_len, &loader->val_cum, &loader->val_starts));
    if (dataset->record_windows) {
        STRAND_CALL(index_records(dataset, dataset->train, dataset->n_train, seq_len, &loader->train_records,
                                  &loader->train_starts));
        STRAND_CALL(index_records(dataset, dataset->val, dataset->n_val, seq_len, &loader->val_records,
                                  &loader->val_starts));
        if (loader->train_starts == 0)
            STRAND_FAIL(STRAND_ERR_CONFIG,
                        "train.seq_len = %lld is longer than every training example of %s (windows start at "
                        "record starts; examples have %lld tokens)",
                        (long long)seq_len, dataset->path,
                        (long long)(dataset->n_records > 0 ? dataset->record_lengths[0] : 0));
    }
    if (loader->train_starts == 0) {
        int64_t longest = 0;
        for (int64_t i = 0; i < dataset->n_train; i++)
            if (dataset->train[i].length > longest) longest = dataset->train[i].length;
        STRAND_FAIL(
            STRAND_ERR_CONFIG,
            "train.seq_len = %lld needs %lld tokens per window, longer than every training record of %s "
            "(longest: %lld tokens)",
            (long long)seq_len, (long long)seq_len + 1, dataset->path, (long long)longest);
    }
    return STRAND_OK;
}

void strand_loader_free(strand_loader *loader) {
    strand_free(loader->train_cum);
    strand_free(loader->val_cum);
    strand_free(loader->train_records);
    strand_free(loader->val_records);
    loader->train_cum = loader->val_cum = NULL;
    loader->train_records = loader->val_records = NULL;
}

/* Map the u-th valid start (0 <= u < total) to a token offset. */
static int64_t start_to_offset(const strand_token_range *ranges, const int64_t *cum, int64_t n, int64_t u) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) { /* last range with cum[i] <= u */
        int64_t mid = (lo + hi + 1) / 2;
        if (cum[mid] <= u)
            lo = mid;
        else
            hi = mid - 1;
    }
    while (lo < n - 1 && cum[lo + 1] <= u)
        lo++; /* skip ranges too short for a window */
    return ranges[lo].offset + (u - cum[lo]);
}

strand_window strand_loader_train_window(const strand_loader *loader, int64_t step, int64_t index) {
    strand_window window;
    uint64_t u = strand_rng_below((uint64_t)loader->train_starts, loader->seed, STRAND_STREAM_WINDOW,
                                  (uint64_t)step, (uint64_t)index);
    window.offset = loader->train_records ? loader->train_records[u]
                                          : start_to_offset(loader->dataset->train, loader->train_cum,
                                                            loader->dataset->n_train, (int64_t)u);
    window.reverse =
        loader->rc_augment
            ? (int)(strand_rng_u64(loader->seed, STRAND_STREAM_RC, (uint64_t)step, (uint64_t)index) & 1)
            : 0;
    return window;
}

int strand_loader_val_window(const strand_loader *loader, int64_t k, int64_t n, strand_window *window) {
    if (loader->val_starts == 0 || n <= 0) return 0;
    int64_t u = (int64_t)(((double)k + 0.5) / (double)n * (double)loader->val_starts);
    if (u >= loader->val_starts) u = loader->val_starts - 1;
    window->offset = loader->val_records
                         ? loader->val_records[u]
                         : start_to_offset(loader->dataset->val, loader->val_cum, loader->dataset->n_val, u);
    window->reverse = 0;
    return 1;
}

int strand_loader_continues(const strand_loader *loader, const strand_window *previous, strand_window next) {
    if (!previous || previous->reverse != next.reverse) return 0;
    return next.offset == previous->offset + (next.reverse ? -loader->seq_len : loader->seq_len);
}

/* End of the record holding token `offset`. */
static int64_t record_end(const strand_dataset *ds, int64_t offset) {
    int64_t lo = 0, hi = ds->n_records - 1;
    while (lo < hi) { /* last record starting at or before offset */
        int64_t mid = (lo + hi + 1) / 2;
        if (ds->record_offsets[mid] <= offset)
            lo = mid;
        else
            hi = mid - 1;
    }
    return ds->n_records > 0 ? ds->record_offsets[lo] + ds->record_lengths[lo] : ds->n_tokens;
}

int strand_loader_read(const strand_loader *loader, strand_window window, int64_t start, int64_t count,
                       strand_token_t *tokens) {
    const int64_t n = count + 1;
    if (loader->dataset->record_windows && !window.reverse) {
        /* The target of a record's last position lies in the next record (or past the end):
         * it is read as token 0, and the loss mask never counts it. */
        const int64_t end = record_end(loader->dataset, window.offset);
        if (window.offset + start + n > end) {
            STRAND_CALL(strand_dataset_read(loader->dataset, window.offset + start, n - 1, tokens));
            tokens[n - 1] = 0;
            return STRAND_OK;
        }
    }
    if (!window.reverse) return strand_dataset_read(loader->dataset, window.offset + start, n, tokens);
    /* Reverse complement: window position i is the complement of original position seq_len - i. */
    const int64_t first = window.offset + loader->seq_len - (start + count);
    STRAND_CALL(strand_dataset_read(loader->dataset, first, n, tokens));
    for (int64_t i = 0, j = n - 1; i < j; i++, j--) {
        strand_token_t t = tokens[i];
        tokens[i] = tokens[j];
        tokens[j] = t;
    }
    /* Reversed order and each token's reverse complement: the window's bases read backwards. */
    const strand_token_t *complement = loader->dataset->codec.complement;
    for (int64_t i = 0; i < n; i++)
        tokens[i] = complement[tokens[i]];
    return STRAND_OK;
}

int strand_loader_read_shard(const strand_loader *loader, strand_window window, const strand_shard *shard,
                             strand_token_t *inputs, strand_token_t *targets, strand_token_t *scratch) {
    int64_t row = 0;
    for (int p = 0; p < shard->n_pieces; p++) {
        const int64_t n = shard->piece_length[p];
        if (n == 0) continue;
        STRAND_CALL(strand_loader_read(loader, window, shard->piece_start[p], n, scratch));
        memcpy(inputs + row, scratch, sizeof *scratch * (size_t)n);
        memcpy(targets + row, scratch + 1, sizeof *scratch * (size_t)n);
        row += n;
    }
    return STRAND_OK;
}

int strand_loader_read_mask(const strand_loader *loader, strand_window window, const strand_shard *shard,
                            real_t *weights) {
    int64_t row = 0;
    for (int p = 0; p < shard->n_pieces; p++) {
        const int64_t n = shard->piece_length[p];
        if (n == 0) continue;
        /* Masks are read in reading order only: task datasets refuse reverse complements. */
        STRAND_ASSERT(!window.reverse || loader->dataset->mask <= 0);
        if (window.reverse) {
            for (int64_t i = 0; i < n; i++)
                weights[row + i] = 1;
        } else {
            STRAND_CALL(strand_dataset_read_mask(loader->dataset, window.offset + shard->piece_start[p], n,
                                                 weights + row));
        }
        row += n;
    }
    return STRAND_OK;
}
