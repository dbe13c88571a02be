/* Learning across ranks: recall a base more than 256 positions back, across the rank boundary.
 *
 * A window of L = 512 tokens holds a cue base c (A, C, G or T, drawn per window) at positions
 * 0-7, the filler N up to a marker SEP at position 264, then c again at 265 and N to the end. The
 * recalled target is the one at position 264 (input SEP, target c): its nearest source is 258
 * positions back. With two ranks and the contiguous layout rank 0 holds 0-255 (the cue) and rank 1
 * 256-511 (the answer), so c must cross the rank boundary in the recurrent state. Every other
 * target is deterministic (N, and SEP at a fixed place) except the 7 inside the cue, so the
 * filler's loss is gone within ~100 steps and what gradient is left comes from the recall.
 *
 * One block per model, about 14k parameters each (d = 32 and MLP 64; gru at d = 36, rnn at d = 48
 * to match), AdamW at lr 1e-2, 500 steps of 16 windows, scored on 64 held-out windows (bits;
 * chance is 2):
 *   lstm                                   must reach < 0.1
 *   gru                                    must reach < 0.1
 *   rnn (tanh, spectral radius 0.9)        reported only
 *   conv x3 (kernel 8, receptive field 22) must stay > 1.5
 * Initialisation (measured over train.seed 1-4 unless said otherwise):
 *   lstm.forget_bias = 6: the cue's trace in c decays as f^k, and f = sig(6) = 0.9975 gives 0.53
 *     over k = 258 (bias 5: 0.18, 3 of 4 seeds learned in 500 steps; bias 4: 0.009, seed 1 did
 *     not; bias 3 would give 4e-6).
 *   lstm.input_bias = -6: the input gate starts nearly closed (chrono initialisation, Tallec and
 *     Ollivier 2018). With i = sig(0) = 0.5 the
 *     constant filler's write i g piles up in c to i g / (1 - f), some 200 g, tanh(c) saturates and
 *     no gradient reaches the cue: forget bias 5 or 6 alone stayed at 2.00-2.03 bits.
 *   gru.update_bias = 6: z = sig(6) = 0.9975 keeps h over about 1 / (1 - z) = 400 positions. With
 *     the default 0, 2 of 4 seeds stayed at chance; with 4 or 6 all 4 learned.
 * Seeds 1-4 reached lstm 0.0034-0.0046 and gru 0.0033-0.0052 bits (after 400 steps: lstm
 * 0.009-0.025, gru 0.005-0.011); rnn stays at 2.007 and conv at 2.005 (seed 1). A cue of 2 or 4
 * bases recalled in order learned too slowly for this budget (gru 1.74 bits after 500 steps), so
 * the cue is one base, written 8 times. About 2.5 minutes at 2 ranks on 2 shared cores.
 *
 * By hand: test_recall_learning [steps [lstm|gru|rnn|conv ...] [key=value ...]] runs only the
 * named models with the overrides; RECALL_LOG=N prints the training loss every N steps. */
#include "learning_util.h"

#include "core/rng.h"
#include "model/model_internal.h"
#include "strand/config.h"
#include "strand/dataset.h"
#include "strand/dist.h"
#include "strand/model.h"

#include <stdlib.h>
#include <string.h>

enum { LENGTH = 512, CUE_LEN = 8, MARK = 264, BATCH = 16, STEPS = 500 };
enum { STREAM_TASK = 78 };

/* Window `index`: the cue base c at 0..CUE_LEN-1, N, SEP at MARK, c at MARK + 1, N to the end. */
static void make_window(strand_token_t *tokens, uint64_t seed, uint64_t index) {
    const strand_token_t cue = (strand_token_t)strand_rng_below(4, seed, STREAM_TASK, index, 0);
    for (int i = 0; i <= LENGTH; i++)
        tokens[i] = i < CUE_LEN ? cue : STRAND_TOKEN_N;
    tokens[MARK] = STRAND_TOKEN_SEP;
    tokens[MARK + 1] = cue;
}

/* The target at t is tokens[t + 1]: the recalled one is at t = MARK (input SEP, target c). */
static int is_recall_target(int64_t t) {
    return t == MARK;
}

static const learning_task recall_task = {
    .length = LENGTH, .make_window = make_window, .is_answer = is_recall_target};

static const char *const defaults[] = {
    "model.d_model=32",    "model.mlp_hidden=64",   "model.conv_kernel=8",
    "train.lr=1e-2",       "train.warmup_steps=30", "train.weight_decay=0.01",
    "train.grad_clip=1.0", "train.seed=1",          NULL};

static const learning_model models[] = {
    {"lstm", "lstm", {"lstm.forget_bias=6", "lstm.input_bias=-6", NULL}, .max_bits = 0.1},
    {"gru", "gru", {"gru.update_bias=6", "model.d_model=36", NULL}, .max_bits = 0.1},
    {"rnn", "rnn", {"model.d_model=48", NULL}, .max_bits = 0}, /* reported only */
    {"conv", "conv,conv,conv", {NULL}, .min_bits = 1.5},
};
enum { N_MODELS = sizeof models / sizeof models[0] };

int main(int argc, char **argv) {
    const learning_suite suite = {.test = "test_recall_learning",
                                  .title = "recall task",
                                  .task = &recall_task,
                                  .layout = STRAND_LAYOUT_CONTIGUOUS,
                                  .steps = STEPS,
                                  .batch = BATCH,
                                  .eval_windows = 64,
                                  .defaults = defaults,
                                  .models = models,
                                  .n_models = N_MODELS,
                                  .log_env = "RECALL_LOG"};
    return learning_suite_main(&suite, argc, argv);
}
