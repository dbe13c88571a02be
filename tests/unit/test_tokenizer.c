/* Tokenizers: parsing and its refusals, k-mer ids on a hand-written piece, encode/decode round
 * trips and the reverse complement for K = 1..8, BPE learning against hand-computed merges and a
 * naive reference learner (ties, overlaps, piece ends), the encoder's greedy property and
 * determinism, and the HDF5 record with each of its refusals. argv[1], when given, is the lambda
 * phage FASTA.gz, learned as bpe:512. */
#define _POSIX_C_SOURCE 200809L
#include "strand/dataset.h"
#include "strand/tokenizer.h"
#include "test_util.h"

#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static char dir[] = "/tmp/strand_test_tokenizer_XXXXXX";

/* ---- helpers ---- */

static uint64_t lcg_state = 12345;
static uint32_t lcg(void) {
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(lcg_state >> 33);
}

/* n random codes, with runs of N now and then */
static void random_codes(uint8_t *codes, int64_t n) {
    for (int64_t i = 0; i < n;) {
        if (lcg() % 40 == 0) {
            for (int64_t run = 1 + lcg() % 6; run > 0 && i < n; run--)
                codes[i++] = 4;
        } else {
            codes[i++] = (uint8_t)(lcg() % 4);
        }
    }
}

/* n codes made of a few motifs repeated (with point changes and N), so BPE has much to merge */
static void repetitive_codes(uint8_t *codes, int64_t n, int n_motifs) {
    uint8_t motifs[16][32];
    int lengths[16];
    for (int m = 0; m < n_motifs; m++) {
        lengths[m] = 4 + (int)(lcg() % 28);
        random_codes(motifs[m], lengths[m]);
    }
    for (int64_t i = 0; i < n;) {
        const int m = (int)(lcg() % (uint32_t)n_motifs);
        for (int j = 0; j < lengths[m] && i < n; j++)
            codes[i++] = lcg() % 30 == 0 ? (uint8_t)(lcg() % 5) : motifs[m][j];
    }
}

static void letters_of(const uint8_t *codes, int64_t n, char *out) {
    for (int64_t i = 0; i < n; i++)
        out[i] = "ACGTN"[codes[i]];
    out[n] = '\0';
}

static void codes_of(const char *letters, uint8_t *codes) {
    for (int64_t i = 0; letters[i]; i++)
        codes[i] = (uint8_t)(strchr("ACGTN", letters[i]) - "ACGTN");
}

/* encode then decode equals the input, and the tokens cover every base */
static int round_trip(strand_tokenizer *t, const uint8_t *codes, int64_t n) {
    strand_token_t *tokens = malloc(((size_t)n + 1) * sizeof *tokens);
    char *expected = malloc((size_t)n + 1), *decoded = malloc((size_t)n + 1);
    int64_t n_tokens = -1;
    int ok = strand_tokenizer_encode(t, codes, n, tokens, &n_tokens) == STRAND_OK;
    letters_of(codes, n, expected);
    for (int64_t i = 0; ok && i < n_tokens; i++)
        ok = tokens[i] < (strand_token_t)t->vocab_size;
    ok = ok && n_tokens >= 0 && n_tokens <= n && strand_tokenizer_bases(t, tokens, n_tokens) == n &&
         strand_tokenizer_decode(t, tokens, n_tokens, decoded) == n && strcmp(decoded, expected) == 0;
    free(tokens);
    free(expected);
    free(decoded);
    return ok;
}

/* ---- parsing ---- */

static void test_parse(void) {
    strand_tokenizer t = {0};
    CHECK(strand_tokenizer_parse(&t, "nucleotide") == STRAND_OK);
    CHECK(t.kind == STRAND_TOKENIZER_NUCLEOTIDE && t.vocab_size == 8 && strcmp(t.name, "nucleotide") == 0);
    CHECK(t.token_bases[0] == 1 && t.token_bases[4] == 1 && t.token_bases[5] == 0 && t.token_bases[7] == 0);
    CHECK(t.text_offset[8] == 5 && memcmp(t.text, "ACGTN", 5) == 0);
    const uint32_t nucleotide_fingerprint = t.fingerprint;
    strand_tokenizer_free(&t);

    CHECK(strand_tokenizer_parse(&t, "kmer:1") == STRAND_OK);
    CHECK(t.kind == STRAND_TOKENIZER_KMER && t.k == 1 && t.vocab_size == 8 && strcmp(t.name, "kmer:1") == 0);
    CHECK(t.fingerprint != nucleotide_fingerprint); /* the name is part of the definition */
    strand_tokenizer_free(&t);
    CHECK(strand_tokenizer_parse(&t, "kmer:8") == STRAND_OK);
    CHECK(t.vocab_size == 65544 && t.token_bases[65543] == 8 && t.text_offset[65544] == 5 + 8 * 65536);
    strand_tokenizer_free(&t);
    CHECK(strand_tokenizer_parse(&t, "bpe") == STRAND_OK);
    CHECK(t.kind == STRAND_TOKENIZER_BPE && t.requested == 4096 && strcmp(t.name, "bpe:4096") == 0);
    CHECK(t.n_merges == 0 && t.encoder == NULL && t.complement == NULL);
    strand_tokenizer_free(&t);
    CHECK(strand_tokenizer_parse(&t, "bpe:9") == STRAND_OK && t.requested == 9);
    strand_tokenizer_free(&t);
    CHECK(strand_tokenizer_parse(&t, "bpe:65544") == STRAND_OK && t.requested == 65544);
    strand_tokenizer_free(&t);

    const char *refused[] = {"kmer:0", "kmer:9", "kmer:",   "kmer:3x", "kmer", "bpe:8",      "bpe:70000",
                             "bpe:",   "bpe:-9", "bpe:1e3", "foo",     "",     "nucleotides"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        int status = strand_tokenizer_parse(&t, refused[i]);
        CHECK_MSG(status == STRAND_ERR_INPUT, "'%s' accepted", refused[i]);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "'%s'", refused[i]);
        CHECK_MSG(strstr(strand_error_message(), quoted) != NULL, "%s", strand_error_message());
        strand_tokenizer_free(&t);
    }
    strand_tokenizer_free(&t); /* twice, and on a zeroed struct, is fine */
}

/* ---- k-mers ---- */

static void test_kmer_example(void) {
    strand_tokenizer t = {0};
    uint8_t codes[32];
    strand_token_t tokens[32];
    int64_t n = 0;
    char out[64];
    /* ACG | TNA (an N: single bases) | CGT | tail TG */
    CHECK(strand_tokenizer_parse(&t, "kmer:3") == STRAND_OK);
    codes_of("ACGTNACGTTG", codes);
    CHECK(strand_tokenizer_encode(&t, codes, 11, tokens, &n) == STRAND_OK);
    const strand_token_t expected3[] = {8 + 6, 3, 4, 0, 8 + 27, 3, 2};
    CHECK(n == 7 && memcmp(tokens, expected3, sizeof expected3) == 0);
    CHECK(strand_tokenizer_decode(&t, tokens, n, out) == 11 && strcmp(out, "ACGTNACGTTG") == 0);
    CHECK(t.complement[8 + 6] == 8 + 27);  /* ACG <-> CGT */
    CHECK(t.complement[8 + 0] == 8 + 63);  /* AAA <-> TTT */
    CHECK(t.complement[8 + 17] == 8 + 46); /* CAC (16 + 0 + 1) <-> GTG (32 + 12 + 2) */
    CHECK(t.complement[0] == 3 && t.complement[1] == 2 && t.complement[4] == 4);
    CHECK(t.complement[5] == 5 && t.complement[6] == 6 && t.complement[7] == 7);
    CHECK(strcmp(strand_tokenizer_decode(&t, tokens, 0, out) == 0 ? out : "x", "") == 0);
    /* a token outside the vocabulary: -1, and no bases */
    strand_token_t bad[2] = {8, 8 + 64};
    CHECK(strand_tokenizer_decode(&t, bad, 2, out) == -1);
    CHECK(strand_tokenizer_bases(&t, bad, 2) == 3);
    /* codes above N are refused */
    codes[2] = 5;
    CHECK(strand_tokenizer_encode(&t, codes, 11, tokens, &n) == STRAND_ERR_INPUT);
    strand_tokenizer_free(&t);

    /* AC | GT | NN | tail T; the specials decode to nothing */
    CHECK(strand_tokenizer_parse(&t, "kmer:2") == STRAND_OK && t.vocab_size == 24);
    codes_of("ACGTNNT", codes);
    CHECK(strand_tokenizer_encode(&t, codes, 7, tokens, &n) == STRAND_OK);
    const strand_token_t expected2[] = {8 + 1, 8 + 11, 4, 4, 3};
    CHECK(n == 5 && memcmp(tokens, expected2, sizeof expected2) == 0);
    const strand_token_t with_specials[] = {6, 8 + 1, 7, 5, 3};
    CHECK(strand_tokenizer_decode(&t, with_specials, 5, out) == 3 && strcmp(out, "ACT") == 0);
    CHECK(strand_tokenizer_bases(&t, with_specials, 5) == 3);
    strand_tokenizer_free(&t);

    /* kmer:8's ids go past 16 bits: TTTTTTTT is 8 + 65535 */
    CHECK(strand_tokenizer_parse(&t, "kmer:8") == STRAND_OK);
    codes_of("TTTTTTTTA", codes);
    CHECK(strand_tokenizer_encode(&t, codes, 9, tokens, &n) == STRAND_OK);
    CHECK(n == 2 && tokens[0] == 65543 && tokens[1] == 0);
    CHECK(t.complement[65543] == 8);
    strand_tokenizer_free(&t);
}

static void test_kmer_round_trips(void) {
    uint8_t codes[2000];
    strand_token_t tokens[2000], reversed[2000];
    char letters[2001], decoded[2001], reverse_complement[2001];
    for (int k = 1; k <= STRAND_KMER_MAX; k++) {
        char spec[16];
        snprintf(spec, sizeof spec, "kmer:%d", k);
        strand_tokenizer t = {0};
        CHECK(strand_tokenizer_parse(&t, spec) == STRAND_OK);
        int trips = 1, complements = 1, involution = 1;
        for (int64_t v = 0; v < t.vocab_size; v++)
            involution &= t.complement[t.complement[v]] == (strand_token_t)v &&
                          t.token_bases[t.complement[v]] == t.token_bases[v];
        for (int trial = 0; trial < 60; trial++) {
            const int64_t n = trial <= 20 ? trial : 21 + (int64_t)(lcg() % 1979);
            random_codes(codes, n);
            trips &= round_trip(&t, codes, n);
            /* reversing the tokens and complementing each spells the reverse complement */
            int64_t n_tokens = 0;
            if (strand_tokenizer_encode(&t, codes, n, tokens, &n_tokens) != STRAND_OK) {
                complements = 0;
                continue;
            }
            for (int64_t i = 0; i < n_tokens; i++)
                reversed[i] = t.complement[tokens[n_tokens - 1 - i]];
            letters_of(codes, n, letters);
            for (int64_t i = 0; i < n; i++)
                reverse_complement[i] = "TGCAN"[strchr("ACGTN", letters[n - 1 - i]) - "ACGTN"];
            reverse_complement[n] = '\0';
            complements &= strand_tokenizer_decode(&t, reversed, n_tokens, decoded) == n &&
                           strcmp(decoded, reverse_complement) == 0;
            /* without N, the token count is floor(n / K) + n mod K */
            if (!memchr(codes, 4, (size_t)n) && k > 1) complements &= n_tokens == n / k + n % k;
        }
        CHECK_MSG(trips, "%s round trips", spec);
        CHECK_MSG(complements, "%s reverse complement", spec);
        CHECK_MSG(involution, "%s complement table", spec);
        strand_tokenizer_free(&t);
    }
}

/* ---- a naive BPE learner: recount every pair for each merge ---- */

typedef struct {
    int32_t *sym;    /* the text, pieces one after another */
    int64_t *starts; /* [n_pieces + 1] */
    int64_t *fill;   /* symbols each piece holds now */
    int64_t n_pieces;
    int32_t (*merges)[2];
    int32_t n_merges;
} naive_bpe;

static void naive_learn(naive_bpe *b, const uint8_t *const *pieces, const int64_t *lengths, int64_t n_pieces,
                        int vocab) {
    int64_t total = 0;
    for (int64_t p = 0; p < n_pieces; p++)
        total += lengths[p];
    b->sym = malloc(((size_t)total + 1) * sizeof *b->sym);
    b->starts = malloc(((size_t)n_pieces + 1) * sizeof *b->starts);
    b->fill = malloc(((size_t)n_pieces + 1) * sizeof *b->fill);
    b->merges = malloc((size_t)vocab * sizeof *b->merges);
    b->n_pieces = n_pieces;
    b->n_merges = 0;
    int64_t at = 0;
    for (int64_t p = 0; p < n_pieces; p++) {
        b->starts[p] = at;
        b->fill[p] = lengths[p];
        for (int64_t i = 0; i < lengths[p]; i++)
            b->sym[at++] = pieces[p][i];
    }
    b->starts[n_pieces] = at;
    int32_t *counts = calloc((size_t)vocab * (size_t)vocab, sizeof *counts);
    while (8 + b->n_merges < vocab) {
        int32_t best = 0, best_left = 0, best_right = 0;
        for (int pass = 0; pass < 2; pass++) {
            for (int64_t p = 0; p < n_pieces; p++) {
                const int32_t *s = b->sym + b->starts[p];
                for (int64_t i = 0; i + 1 < b->fill[p]; i++) {
                    int32_t *c = &counts[(int64_t)s[i] * vocab + s[i + 1]];
                    if (pass == 0) {
                        (*c)++;
                    } else {
                        if (*c > best || (*c == best && (s[i] < best_left ||
                                                         (s[i] == best_left && s[i + 1] < best_right)))) {
                            best = *c;
                            best_left = s[i];
                            best_right = s[i + 1];
                        }
                    }
                }
            }
        }
        for (int64_t p = 0; p < n_pieces; p++) {
            const int32_t *s = b->sym + b->starts[p];
            for (int64_t i = 0; i + 1 < b->fill[p]; i++)
                counts[(int64_t)s[i] * vocab + s[i + 1]] = 0;
        }
        if (best < 2) break;
        const int32_t token = 8 + b->n_merges;
        b->merges[b->n_merges][0] = best_left;
        b->merges[b->n_merges++][1] = best_right;
        for (int64_t p = 0; p < n_pieces; p++) {
            int32_t *s = b->sym + b->starts[p];
            int64_t out = 0;
            for (int64_t i = 0; i < b->fill[p]; i++) {
                if (i + 1 < b->fill[p] && s[i] == best_left && s[i + 1] == best_right) {
                    s[out++] = token;
                    i++;
                } else {
                    s[out++] = s[i];
                }
            }
            b->fill[p] = out;
        }
    }
    free(counts);
}

static void naive_free(naive_bpe *b) {
    free(b->sym);
    free(b->starts);
    free(b->fill);
    free(b->merges);
}

/* Learn `spec` on the pieces; compare with the naive learner (merges, and the encoding of every
 * piece with what learning made of it), check round trips and that no adjacent pair of an
 * encoding is a merge. */
static void check_learned(const char *spec, const uint8_t *const *pieces, const int64_t *lengths,
                          int64_t n_pieces, strand_tokenizer *out) {
    strand_tokenizer t = {0};
    CHECK(strand_tokenizer_parse(&t, spec) == STRAND_OK);
    CHECK_MSG(strand_tokenizer_learn(&t, pieces, lengths, n_pieces) == STRAND_OK, "%s",
              strand_error_message());
    naive_bpe b;
    naive_learn(&b, pieces, lengths, n_pieces, t.requested);
    CHECK_MSG(t.n_merges == b.n_merges && t.vocab_size == 8 + t.n_merges, "%s: %d merges, naive %d", spec,
              t.n_merges, b.n_merges);
    int same = t.n_merges == b.n_merges;
    for (int32_t m = 0; same && m < t.n_merges; m++)
        same = t.merges[m][0] == b.merges[m][0] && t.merges[m][1] == b.merges[m][1];
    CHECK_MSG(same, "%s: merges differ from the naive learner", spec);

    int reproduced = 1, trips = 1, greedy = 1;
    strand_token_t *tokens = NULL;
    for (int64_t p = 0; p < n_pieces; p++) {
        tokens = realloc(tokens, ((size_t)lengths[p] + 1) * sizeof *tokens);
        int64_t n_tokens = 0;
        CHECK(strand_tokenizer_encode(&t, pieces[p], lengths[p], tokens, &n_tokens) == STRAND_OK);
        reproduced &= n_tokens == b.fill[p];
        for (int64_t i = 0; reproduced && i < n_tokens; i++)
            reproduced &= tokens[i] == (strand_token_t)b.sym[b.starts[p] + i];
        for (int64_t i = 0; i + 1 < n_tokens; i++)
            for (int32_t m = 0; m < t.n_merges; m++)
                greedy &= !((strand_token_t)t.merges[m][0] == tokens[i] &&
                            (strand_token_t)t.merges[m][1] == tokens[i + 1]);
        trips &= round_trip(&t, pieces[p], lengths[p]);
    }
    CHECK_MSG(reproduced, "%s: encoding the learning text differs from what learning made", spec);
    CHECK_MSG(greedy, "%s: an adjacent pair of an encoding is a merge", spec);
    CHECK_MSG(trips, "%s: round trip of the learning text", spec);
    free(tokens);
    naive_free(&b);
    if (out)
        *out = t;
    else
        strand_tokenizer_free(&t);
}

/* ---- BPE ---- */

static void learn_letters(const char *spec, const char *const *letters, int n, strand_tokenizer *t) {
    uint8_t codes[16][64];
    const uint8_t *pieces[16];
    int64_t lengths[16];
    for (int p = 0; p < n; p++) {
        codes_of(letters[p], codes[p]);
        pieces[p] = codes[p];
        lengths[p] = (int64_t)strlen(letters[p]);
    }
    check_learned(spec, pieces, lengths, n, t);
}

static void test_bpe_hand(void) {
    strand_tokenizer t = {0};
    uint8_t codes[16];
    strand_token_t tokens[16];
    int64_t n = 0;
    char out[32];

    /* AC 3, CA 2: AC -> 8, leaving 8 8 8 G T; (8, 8) twice (overlapping) -> 9 once: 9 8 G T */
    const char *acac[] = {"ACACACGT"};
    learn_letters("bpe:64", acac, 1, &t);
    CHECK(t.n_merges == 2 && t.vocab_size == 10);
    CHECK(t.merges[0][0] == 0 && t.merges[0][1] == 1 && t.merges[1][0] == 8 && t.merges[1][1] == 8);
    CHECK(t.token_bases[9] == 4 && strncmp(t.text + t.text_offset[9], "ACAC", 4) == 0);
    codes_of("ACACACGT", codes);
    CHECK(strand_tokenizer_encode(&t, codes, 8, tokens, &n) == STRAND_OK);
    CHECK(n == 4 && tokens[0] == 9 && tokens[1] == 8 && tokens[2] == 2 && tokens[3] == 3);
    strand_tokenizer_free(&t);

    /* AC, CG, GT twice each: the smaller left wins (AC), then GT (left 2) before 8 G (left 8),
     * then 8 9 */
    const char *acgt[] = {"ACGTACGT"};
    learn_letters("bpe:64", acgt, 1, &t);
    CHECK(t.n_merges == 3);
    CHECK(t.merges[0][0] == 0 && t.merges[0][1] == 1);
    CHECK(t.merges[1][0] == 2 && t.merges[1][1] == 3);
    CHECK(t.merges[2][0] == 8 && t.merges[2][1] == 9);
    codes_of("ACGTACGTAC", codes);
    CHECK(strand_tokenizer_encode(&t, codes, 10, tokens, &n) == STRAND_OK);
    CHECK(n == 3 && tokens[0] == 10 && tokens[1] == 10 && tokens[2] == 8);
    CHECK(strand_tokenizer_decode(&t, tokens, n, out) == 10 && strcmp(out, "ACGTACGTAC") == 0);
    strand_tokenizer_free(&t);

    /* equal counts and left: the smaller right first; no pair across piece ends (A|C) */
    const char *right_tie[] = {"AG", "AC", "AG", "AC", "CA", "A", "C", "A", "C", "A", "C"};
    learn_letters("bpe:64", right_tie, 11, &t);
    CHECK(t.n_merges == 2 && t.merges[0][0] == 0 && t.merges[0][1] == 1 && t.merges[1][0] == 0 &&
          t.merges[1][1] == 2);
    strand_tokenizer_free(&t);

    /* AAAA: (A, A) three times (overlapping), applied left to right: 8 8 */
    const char *aaaa[] = {"AAAA"};
    learn_letters("bpe:64", aaaa, 1, &t);
    CHECK(t.n_merges == 1 && t.merges[0][0] == 0 && t.merges[0][1] == 0);
    codes_of("AAAAA", codes);
    CHECK(strand_tokenizer_encode(&t, codes, 5, tokens, &n) == STRAND_OK);
    CHECK(n == 3 && tokens[0] == 8 && tokens[1] == 8 && tokens[2] == 0);
    strand_tokenizer_free(&t);

    /* N is a base like the others; V caps the merges */
    const char *nn[] = {"NNNNNNNNACACAC"};
    learn_letters("bpe:9", nn, 1, &t);
    CHECK(t.n_merges == 1 && t.vocab_size == 9 && t.merges[0][0] == 4 && t.merges[0][1] == 4);
    strand_tokenizer_free(&t);

    /* nothing repeats: no merges, vocabulary 8, and encoding is the identity */
    const char *once[] = {"ACGT"};
    learn_letters("bpe:64", once, 1, &t);
    CHECK(t.n_merges == 0 && t.vocab_size == 8 && t.encoder != NULL);
    strand_tokenizer_free(&t);

    /* refusals: learning another kind, codes above 4, encoding before the merges */
    uint8_t five[3] = {0, 5, 1};
    const uint8_t *piece = five;
    int64_t three = 3;
    CHECK(strand_tokenizer_parse(&t, "kmer:2") == STRAND_OK);
    CHECK(strand_tokenizer_learn(&t, &piece, &three, 1) == STRAND_ERR_INPUT);
    strand_tokenizer_free(&t);
    CHECK(strand_tokenizer_parse(&t, "bpe:16") == STRAND_OK);
    CHECK(strand_tokenizer_encode(&t, five, 1, tokens, &n) == STRAND_ERR_INPUT);
    CHECK(strand_tokenizer_learn(&t, &piece, &three, 1) == STRAND_ERR_INPUT);
    CHECK(strstr(strand_error_message(), "code 5") != NULL);
    CHECK(t.n_merges == 0);

    /* set_merges: every id below 8 + its index and none of PAD, BOS, SEP; at most V - 8 */
    const int32_t good[3][2] = {{0, 1}, {8, 2}, {9, 4}};
    CHECK(strand_tokenizer_set_merges(&t, good, 3) == STRAND_OK);
    CHECK(t.vocab_size == 11 && t.token_bases[10] == 4 &&
          strncmp(t.text + t.text_offset[10], "ACGN", 4) == 0);
    const int32_t forward[1][2] = {{8, 0}}, pad[1][2] = {{0, 5}}, bos[1][2] = {{6, 0}},
                  negative[1][2] = {{-1, 0}};
    CHECK(strand_tokenizer_set_merges(&t, forward, 1) == STRAND_ERR_INPUT);
    CHECK(strand_tokenizer_set_merges(&t, pad, 1) == STRAND_ERR_INPUT);
    CHECK(strand_tokenizer_set_merges(&t, bos, 1) == STRAND_ERR_INPUT);
    CHECK(strand_tokenizer_set_merges(&t, negative, 1) == STRAND_ERR_INPUT);
    CHECK(t.vocab_size == 11); /* a refused set leaves the tokenizer as it was */
    int32_t many[9][2];
    for (int m = 0; m < 9; m++)
        many[m][0] = many[m][1] = 0;
    CHECK(strand_tokenizer_set_merges(&t, (const int32_t(*)[2])many, 9) == STRAND_ERR_INPUT);
    CHECK(strand_tokenizer_set_merges(&t, (const int32_t(*)[2])many, 8) == STRAND_OK && t.vocab_size == 16);
    /* a repeated pair never applies twice: its first rank makes it */
    codes_of("AAAA", codes);
    CHECK(strand_tokenizer_encode(&t, codes, 4, tokens, &n) == STRAND_OK && n == 2 && tokens[0] == 8);
    strand_tokenizer_free(&t);
}

static void test_bpe_random(void) {
    enum { N_PIECES = 12 };
    static uint8_t text[N_PIECES][4000];
    const uint8_t *pieces[N_PIECES];
    int64_t lengths[N_PIECES];
    for (int p = 0; p < N_PIECES; p++) {
        lengths[p] = p < 4 ? p : 200 + (int64_t)(lcg() % 3800); /* a few empty or tiny pieces too */
        repetitive_codes(text[p], lengths[p], 10);
        pieces[p] = text[p];
    }
    strand_tokenizer a = {0}, b = {0}, c = {0};
    check_learned("bpe:256", pieces, lengths, N_PIECES, &a);
    CHECK(a.n_merges == 248);
    check_learned("bpe:1024", pieces, lengths, N_PIECES, &b);
    CHECK(b.n_merges > 256 && b.n_merges <= 1016);
    /* the first 248 merges of bpe:1024 are bpe:256's */
    CHECK(memcmp(a.merges, b.merges, 248 * sizeof *a.merges) == 0);
    /* determinism: learning again gives the same merges and fingerprint */
    CHECK(strand_tokenizer_parse(&c, "bpe:1024") == STRAND_OK);
    CHECK(strand_tokenizer_learn(&c, pieces, lengths, N_PIECES) == STRAND_OK);
    CHECK(c.n_merges == b.n_merges && c.fingerprint == b.fingerprint &&
          memcmp(c.merges, b.merges, (size_t)b.n_merges * sizeof *b.merges) == 0);
    CHECK(a.fingerprint != b.fingerprint);
    strand_tokenizer_free(&c);

    /* round trips of other text, short pieces first; the workspace grows and shrinks back */
    static uint8_t other[20000];
    int trips = 1;
    for (int trial = 0; trial < 80; trial++) {
        const int64_t n = trial <= 20 ? trial : (trial % 7 == 0 ? 20000 : (int64_t)(lcg() % 3000));
        if (trial % 2)
            repetitive_codes(other, n, 6);
        else
            random_codes(other, n);
        trips &= round_trip(&a, other, n) && round_trip(&b, other, n);
    }
    CHECK_MSG(trips, "bpe round trips of new text");

    /* a copy encodes alike */
    CHECK(strand_tokenizer_copy(&c, &b) == STRAND_OK);
    CHECK(c.fingerprint == b.fingerprint && c.vocab_size == b.vocab_size && c.encoder != b.encoder &&
          c.merges != b.merges);
    strand_token_t *tb = malloc(sizeof *tb * 4000), *tc = malloc(sizeof *tc * 4000);
    int64_t nb = 0, nc = 0;
    CHECK(strand_tokenizer_encode(&b, text[5], lengths[5], tb, &nb) == STRAND_OK);
    CHECK(strand_tokenizer_encode(&c, text[5], lengths[5], tc, &nc) == STRAND_OK);
    CHECK(nb == nc && nb < lengths[5] / 3 && memcmp(tb, tc, (size_t)nb * sizeof *tb) == 0);
    free(tb);
    free(tc);
    strand_tokenizer_free(&c);
    CHECK(strand_tokenizer_copy(&c, &a) == STRAND_OK);
    strand_tokenizer_free(&a);
    CHECK(round_trip(&c, text[7], lengths[7])); /* the copy owns its tables */
    strand_tokenizer_free(&c);
    strand_tokenizer_free(&b);
}

/* ---- HDF5 ---- */

static int write_file(const char *path, const strand_tokenizer *t, int writer) {
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) return STRAND_ERR_IO;
    int status = strand_tokenizer_write(file, t, writer, path);
    H5Fclose(file);
    return status;
}

static int read_file(const char *path, strand_tokenizer *t) {
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return STRAND_ERR_IO;
    int status = strand_tokenizer_read(file, t, path);
    H5Fclose(file);
    return status;
}

/* Overwrite integer attribute `name` of the file's root. */
static void set_int_attribute(const char *path, const char *name, int64_t value) {
    hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t attribute = H5Aopen(file, name, H5P_DEFAULT);
    CHECK(attribute >= 0 && H5Awrite(attribute, H5T_NATIVE_INT64, &value) >= 0);
    H5Aclose(attribute);
    H5Fclose(file);
}

static int same_tokenizer(const strand_tokenizer *a, const strand_tokenizer *b) {
    if (strcmp(a->name, b->name) || a->kind != b->kind || a->vocab_size != b->vocab_size ||
        a->fingerprint != b->fingerprint || a->n_merges != b->n_merges || a->k != b->k ||
        a->requested != b->requested)
        return 0;
    if (a->n_merges && memcmp(a->merges, b->merges, (size_t)a->n_merges * sizeof *a->merges)) return 0;
    if (memcmp(a->token_bases, b->token_bases, (size_t)a->vocab_size * sizeof *a->token_bases)) return 0;
    if (memcmp(a->text_offset, b->text_offset, ((size_t)a->vocab_size + 1) * sizeof *a->text_offset))
        return 0;
    return memcmp(a->text, b->text, (size_t)a->text_offset[a->vocab_size]) == 0;
}

static void expect_refusal(const char *path, const char *words) {
    strand_tokenizer t = {0};
    int status = read_file(path, &t);
    CHECK_MSG(status == STRAND_ERR_INPUT, "%s: read gave %d", words, status);
    CHECK_MSG(strstr(strand_error_message(), path) && strstr(strand_error_message(), words),
              "'%s' not in: %s", words, strand_error_message());
    CHECK(t.token_bases == NULL && t.encoder == NULL); /* nothing left behind */
}

static void test_hdf5(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.h5", dir);
    uint8_t codes[6000];
    repetitive_codes(codes, 6000, 8);
    const uint8_t *piece = codes;
    const int64_t length = 6000;
    strand_tokenizer bpe = {0}, kmer = {0}, nucleotide = {0}, got = {0};
    CHECK(strand_tokenizer_parse(&bpe, "bpe:300") == STRAND_OK);
    CHECK(strand_tokenizer_learn(&bpe, &piece, &length, 1) == STRAND_OK);
    CHECK(strand_tokenizer_parse(&kmer, "kmer:5") == STRAND_OK);
    CHECK(strand_tokenizer_parse(&nucleotide, "nucleotide") == STRAND_OK);

    const strand_tokenizer *all[] = {&nucleotide, &kmer, &bpe};
    for (int i = 0; i < 3; i++) {
        CHECK(write_file(path, all[i], 1) == STRAND_OK);
        CHECK_MSG(read_file(path, &got) == STRAND_OK, "%s", strand_error_message());
        CHECK_MSG(same_tokenizer(&got, all[i]), "%s read back differs", all[i]->name);
        CHECK(got.kind != STRAND_TOKENIZER_BPE || round_trip(&got, codes, 6000));
        strand_tokenizer_free(&got);
    }

    /* damaged definitions: fingerprint, vocabulary */
    CHECK(write_file(path, &bpe, 1) == STRAND_OK);
    set_int_attribute(path, "tokenizer_fingerprint", (int64_t)(bpe.fingerprint ^ 1u));
    expect_refusal(path, "fingerprint");
    CHECK(write_file(path, &kmer, 1) == STRAND_OK);
    set_int_attribute(path, "tokenizer_fingerprint", (int64_t)(kmer.fingerprint ^ 1u));
    expect_refusal(path, "fingerprint");
    CHECK(write_file(path, &bpe, 1) == STRAND_OK);
    set_int_attribute(path, "vocab_size", bpe.vocab_size - 1);
    expect_refusal(path, "vocab_size");
    CHECK(write_file(path, &kmer, 1) == STRAND_OK);
    set_int_attribute(path, "vocab_size", 8);
    expect_refusal(path, "vocab_size");
    /* writer = 0 stores nothing into /tokenizer/merges (zeros), which the fingerprint catches */
    CHECK(write_file(path, &bpe, 0) == STRAND_OK);
    expect_refusal(path, "fingerprint");

    /* an unknown name; bpe without merges; merges that are not valid; an older nucleotide file */
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(strand_h5_write_string_attribute(file, "tokenizer", "foo", path) == STRAND_OK);
    CHECK(strand_h5_write_int_attribute(file, "tokenizer_version", 1, path) == STRAND_OK);
    CHECK(strand_h5_write_int_attribute(file, "vocab_size", 8, path) == STRAND_OK);
    H5Fclose(file);
    expect_refusal(path, "unknown tokenizer 'foo'");
    file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(strand_h5_write_string_attribute(file, "tokenizer", "bpe:300", path) == STRAND_OK);
    CHECK(strand_h5_write_int_attribute(file, "tokenizer_version", 1, path) == STRAND_OK);
    CHECK(strand_h5_write_int_attribute(file, "vocab_size", 8, path) == STRAND_OK);
    H5Fclose(file);
    expect_refusal(path, "/tokenizer/merges");

    strand_tokenizer bad = {0};
    CHECK(strand_tokenizer_parse(&bad, "bpe:300") == STRAND_OK);
    const int32_t fine[2][2] = {{0, 1}, {8, 8}};
    CHECK(strand_tokenizer_set_merges(&bad, fine, 2) == STRAND_OK);
    bad.merges[1][1] = 9; /* forward reference, behind the tokenizer's back */
    CHECK(write_file(path, &bad, 1) == STRAND_OK);
    expect_refusal(path, "merge 1");
    strand_tokenizer_free(&bad);

    file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(strand_h5_write_string_attribute(file, "tokenizer", "nucleotide", path) == STRAND_OK);
    CHECK(strand_h5_write_int_attribute(file, "tokenizer_version", 1, path) == STRAND_OK);
    CHECK(strand_h5_write_int_attribute(file, "vocab_size", 8, path) == STRAND_OK);
    H5Fclose(file);
    CHECK_MSG(read_file(path, &got) == STRAND_OK, "%s", strand_error_message());
    CHECK(same_tokenizer(&got, &nucleotide));
    strand_tokenizer_free(&got);
    set_int_attribute(path, "tokenizer_version", 2);
    expect_refusal(path, "version 2");

    strand_tokenizer_free(&bpe);
    strand_tokenizer_free(&kmer);
    strand_tokenizer_free(&nucleotide);
}

/* ---- lambda phage ---- */

static uint8_t *read_fasta_gz(const char *path, int64_t *n) {
    gzFile in = gzopen(path, "rb");
    if (!in) return NULL;
    int64_t cap = 1 << 16, fill = 0;
    uint8_t *codes = malloc((size_t)cap);
    char line[4096];
    int header = 0;
    while (gzgets(in, line, sizeof line)) {
        const size_t len = strlen(line);
        const int starts_line = !header;
        if (starts_line && line[0] == '>') header = 1;
        if (!header) {
            for (size_t i = 0; i < len; i++) {
                const char c = line[i];
                if (c == '\n' || c == '\r') continue;
                if (fill == cap) codes = realloc(codes, (size_t)(cap *= 2));
                const char *p = strchr("ACGTacgt", c);
                codes[fill++] = p && c ? (uint8_t)((p - "ACGTacgt") % 4) : 4;
            }
        }
        if (len > 0 && line[len - 1] == '\n') header = 0;
    }
    gzclose(in);
    *n = fill;
    return codes;
}

static void test_lambda(const char *path) {
    int64_t n = 0;
    uint8_t *codes = read_fasta_gz(path, &n);
    CHECK_MSG(codes && n == 48502, "%s: %lld bases", path, (long long)n);
    if (!codes) return;
    const uint8_t *piece = codes;
    strand_tokenizer t = {0};
    check_learned("bpe:512", &piece, &n, 1, &t);
    CHECK(t.n_merges == 504);
    /* a piece as long as strand prep ever encodes: lambda over and over (a quarter of that under
     * AddressSanitizer, where it would take seconds; the same code runs) */
#ifdef __SANITIZE_ADDRESS__
    const int64_t big = STRAND_TOKENIZER_PIECE_BASES / 4;
#else
    const int64_t big = STRAND_TOKENIZER_PIECE_BASES;
#endif
    uint8_t *long_piece = malloc((size_t)big);
    for (int64_t i = 0; i < big; i++)
        long_piece[i] = codes[i % n];
    CHECK(round_trip(&t, long_piece, big));
    CHECK(round_trip(&t, codes, 1000)); /* and short again, in the grown workspace */
    free(long_piece);
    strand_tokenizer_free(&t);
    free(codes);
}

int main(int argc, char **argv) {
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    strand_h5_quiet();
    test_parse();
    test_kmer_example();
    test_kmer_round_trips();
    test_bpe_hand();
    test_bpe_random();
    test_hdf5();
    if (argc > 1)
        test_lambda(argv[1]);
    else
        fprintf(stderr, "test_tokenizer: no lambda phage FASTA given, skipping that part\n");
    char command[600];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    CHECK(system(command) == 0);
    return test_finish("test_tokenizer");
}
