/* metrics.jsonl and the progress line. */
#define _POSIX_C_SOURCE 200809L
#include "train/metrics.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

int strand_metrics_open(strand_metrics *metrics, const char *run_dir, int progress_mode, int append) {
    memset(metrics, 0, sizeof *metrics);
    metrics->terminal = progress_mode == STRAND_PROGRESS_BAR ||
                        (progress_mode == STRAND_PROGRESS_AUTO && isatty(STDOUT_FILENO));
    if (!run_dir) return STRAND_OK;
    snprintf(metrics->path, sizeof metrics->path, "%s/metrics.jsonl", run_dir);
    metrics->jsonl = fopen(metrics->path, append ? "a" : "w");
    if (!metrics->jsonl)
        STRAND_FAIL(STRAND_ERR_IO, "cannot %s %s: %s", append ? "append to" : "create", metrics->path,
                    strerror(errno));
    return STRAND_OK;
}

/* JSON has no NaN: write null so every line stays parseable. */
static void json_number(FILE *f, const char *key, double value, int last) {
    if (isfinite(value))
        fprintf(f, "\"%s\":%.9g%s", key, value, last ? "" : ",");
    else
        fprintf(f, "\"%s\":null%s", key, last ? "" : ",");
}

int strand_metrics_write(strand_metrics *metrics, const strand_step_metrics *m) {
    if (!metrics->jsonl) return STRAND_OK;
    FILE *f = metrics->jsonl;
    errno = 0; /* what the first failing write leaves here is the reason */
    fprintf(f, "{\"step\":%lld,", (long long)m->step);
    json_number(f, "loss", m->loss, 0);
    json_number(f, "bpb", m->bpb, 0);
    json_number(f, "lr", m->lr, 0);
    json_number(f, "grad_norm", m->grad_norm, 0);
    if (!isnan(m->answer_accuracy)) json_number(f, "answer_accuracy", m->answer_accuracy, 0);
    if (m->grad_norm_by_block) {
        fputs("\"grad_norm_by_block\":[", f);
        for (int l = 0; l < m->n_blocks; l++) {
            if (isfinite(m->grad_norm_by_block[l]))
                fprintf(f, "%s%.9g", l ? "," : "", m->grad_norm_by_block[l]);
            else
                fprintf(f, "%snull", l ? "," : "");
        }
        fputs("],", f);
    }
    json_number(f, "tokens_per_s", m->tokens_per_s, 0);
    fprintf(f, "\"tokens\":%lld,", (long long)m->tokens_seen);
    json_number(f, "bits_per_token", m->bits_per_token, 0);
    json_number(f, "step_s", m->step_seconds, 0);
    json_number(f, "compute_s", m->compute_seconds, 0);
    json_number(f, "comm_s", m->comm_seconds, 0);
    json_number(f, "io_s", m->io_seconds, 0);
    json_number(f, "offload_s", m->offload_seconds, 0);
    fprintf(f, "\"peak_rss_bytes\":%lld,", (long long)m->peak_rss_bytes);
    fprintf(f, "\"bytes_sent\":%lld,", (long long)m->bytes_sent);
    json_number(f, "elapsed_s", m->elapsed_seconds, 1);
    fputs("}\n", f);
    const int failed = ferror(f) || fflush(f) != 0;
    if (failed)
        STRAND_FAIL(STRAND_ERR_IO, "cannot write %s: %s", metrics->path, strerror(errno ? errno : EIO));
    return STRAND_OK;
}

void strand_format_duration(char *out, size_t size, double seconds) {
    if (!isfinite(seconds) || seconds < 0) seconds = 0;
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(out, size, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else if (s >= 60)
        snprintf(out, size, "%ldm%02lds", s / 60, s % 60);
    else
        snprintf(out, size, "%lds", s);
}

void strand_format_bytes(char *out, size_t size, double bytes) {
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4)
        bytes /= 1024, u++;
    snprintf(out, size, u >= 3 ? "%.2f %s" : "%.0f %s", bytes, units[u]);
}

void strand_metrics_progress(strand_metrics *metrics, const strand_step_metrics *m, int log_line) {
    if (!metrics->terminal && !log_line) return;
    char eta[32], mem[32], rate[32];
    double remaining = (double)(m->total_steps - m->step) * (m->elapsed_seconds / (double)m->step);
    strand_format_duration(eta, sizeof eta, remaining);
    strand_format_bytes(mem, sizeof mem, (double)m->peak_rss_bytes);
    if (m->tokens_per_s >= 1e6)
        snprintf(rate, sizeof rate, "%.2fM", m->tokens_per_s / 1e6);
    else
        snprintf(rate, sizeof rate, "%.1fk", m->tokens_per_s / 1e3);
    const double total = m->step_seconds > 0 ? m->step_seconds : 1;
    char line[512];
    int width = (int)snprintf(NULL, 0, "%lld", (long long)m->total_steps);
    snprintf(line, sizeof line,
             "step %*lld/%lld | loss %.4f | bpb %.4f | lr %.2e | gnorm %.3f | %s tok/s | compute %.0f%% comm "
             "%.0f%% io %.0f%% | mem/rank %s | eta %s",
             width, (long long)m->step, (long long)m->total_steps, m->loss, m->bpb, m->lr, m->grad_norm, rate,
             100 * m->compute_seconds / total, 100 * m->comm_seconds / total, 100 * m->io_seconds / total,
             mem, eta);
    if (!isnan(m->answer_accuracy)) {
        /* Task datasets: accuracy on the answers, after the loss. */
        char *after = strstr(line, " | lr ");
        if (after) {
            char rest[512];
            snprintf(rest, sizeof rest, "%s", after);
            snprintf(after, sizeof line - (size_t)(after - line), " | acc %.4f%s", m->answer_accuracy, rest);
        }
    }
    if (metrics->terminal) {
        /* A bar of 20 cells in front of the line, redrawn in place. */
        int filled = (int)(20.0 * (double)m->step / (double)m->total_steps);
        char bar[21];
        for (int i = 0; i < 20; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[20] = '\0';
        printf("\r\033[K[%s] %s", bar, line);
        if (log_line) putchar('\n');
        metrics->pending_newline = !log_line;
    } else {
        printf("%s\n", line);
    }
    fflush(stdout);
}

void strand_metrics_close(strand_metrics *metrics) {
    if (metrics->terminal && metrics->pending_newline) putchar('\n');
    if (metrics->jsonl) fclose(metrics->jsonl);
    metrics->jsonl = NULL;
}
