/* DNA tokenizers: single nucleotides, non-overlapping k-mers and byte-pair merges (BPE).
 *
 * Every tokenizer shares ids 0..7 with the nucleotide one (A C G T N, then PAD BOS SEP), so a
 * single base is always a token and nothing is ever lost:
 *   nucleotide  vocabulary 8.
 *   kmer:K      (1 <= K <= 8) ids 8 + sum_j base_j 4^(K-1-j) for a K-mer of A/C/G/T (first base
 *               most significant); vocabulary 8 + 4^K (kmer:1 is the nucleotide tokenizer). A
 *               piece is read K bases at a time from its start: a K-mer holding an N, and the last
 *               n mod K bases, are written as single-base tokens.
 *   bpe:V       merge i (0-based) makes token 8 + i from an adjacent pair (left, right) of earlier
 *               tokens; vocabulary 8 + merges <= V. Learned by strand_tokenizer_learn: the most
 *               frequent adjacent pair first, ties to the smaller left id, then the smaller right
 *               id; N is a base like the others; PAD, BOS and SEP are never merged. Encoding
 *               applies the merges in order, each leftmost occurrence first, which reproduces
 *               what learning did to its own text.
 * Encoding works on one piece of bases at a time (a record's training or validation part); no
 * token crosses a piece's ends. Bases are nucleotide codes 0..4 (strand_fasta_token_of). */
#ifndef STRAND_TOKENIZER_H
#define STRAND_TOKENIZER_H

#include "strand/common.h"

#include <hdf5.h>
#include <stdint.h>

#define STRAND_TOKENIZER_BASE_IDS 8 /* ids shared by every tokenizer: A C G T N PAD BOS SEP */
#define STRAND_KMER_MAX 8
#define STRAND_BPE_DEFAULT_VOCAB 4096
/* Longest piece strand prep encodes at once: a longer training or validation part of a record is
 * encoded in consecutive pieces of this many bases (memory stays bounded on a chromosome). */
#define STRAND_TOKENIZER_PIECE_BASES ((int64_t)1 << 22)

typedef enum {
    STRAND_TOKENIZER_NUCLEOTIDE = 0,
    STRAND_TOKENIZER_KMER = 1,
    STRAND_TOKENIZER_BPE = 2,
} strand_tokenizer_kind;

typedef struct strand_bpe_encoder strand_bpe_encoder;

typedef struct {
    strand_tokenizer_kind kind;
    int k;            /* kmer: K */
    int requested;    /* bpe: V asked for (vocab_size may be smaller when pairs ran out) */
    int vocab_size;   /* ids 0 .. vocab_size - 1 */
    char name[32];    /* "nucleotide", "kmer:6", "bpe:4096" (the requested V) */
    int32_t n_merges; /* bpe */
    int32_t (*merges)[2];
    int32_t *token_bases;        /* [vocab_size] bases a token decodes to (0 for PAD, BOS, SEP) */
    int64_t *text_offset;        /* [vocab_size + 1]: token t decodes to text[text_offset[t] ..
                                    text_offset[t + 1]) */
    char *text;                  /* the letters A C G T N of every token, concatenated */
    strand_token_t *complement;  /* [vocab_size] reverse complement of each token (nucleotide, kmer);
                                    NULL for bpe, whose tokens have no reverse complement in general */
    uint32_t fingerprint;        /* CRC-32 of the definition: equal fingerprints encode alike */
    strand_bpe_encoder *encoder; /* bpe: made by strand_tokenizer_finish */
} strand_tokenizer;

/* "nucleotide", "kmer:K" or "bpe:V" (V from 9 to STRAND_VOCAB_MAX; "bpe" alone is bpe:4096).
 * A nucleotide or kmer tokenizer is complete; a bpe one still needs its merges (learn, or
 * strand_tokenizer_set_merges). Refuses anything else naming the text and the reason. */
int strand_tokenizer_parse(strand_tokenizer *t, const char *spec);
/* Learn a bpe tokenizer's merges (up to requested - 8) from pieces of bases (codes 0..4; no pair
 * spans two pieces), then finish it. Memory O(total bases): the caller samples a chromosome. */
int strand_tokenizer_learn(strand_tokenizer *t, const uint8_t *const *pieces, const int64_t *lengths,
                           int64_t n_pieces);
/* Give a bpe tokenizer its merges (copied; every id must be below 8 + its own index) and finish. */
int strand_tokenizer_set_merges(strand_tokenizer *t, const int32_t (*merges)[2], int32_t n_merges);

/* Encode one piece: codes[n] (0..4) -> tokens (capacity n), *n_tokens of them. */
int strand_tokenizer_encode(strand_tokenizer *t, const uint8_t *codes, int64_t n, strand_token_t *tokens,
                            int64_t *n_tokens);
/* Bases of tokens[n] (sum of token_bases); tokens at or above vocab_size count 0. */
int64_t strand_tokenizer_bases(const strand_tokenizer *t, const strand_token_t *tokens, int64_t n);
/* Decode tokens[n] into letters (out has room for strand_tokenizer_bases + 1; NUL-terminated).
 * Returns the letters written, or -1 for a token at or above vocab_size. */
int64_t strand_tokenizer_decode(const strand_tokenizer *t, const strand_token_t *tokens, int64_t n,
                                char *out);

/* Store a tokenizer in an HDF5 file: root attributes tokenizer (the name), tokenizer_version,
 * vocab_size, tokenizer_fingerprint and, for bpe, the dataset /tokenizer/merges (int32, n x 2).
 * With `writer` = 0 under MPI-IO the dataset is created collectively but only the rank with
 * writer != 0 writes its data. Serial files: writer = 1. */
int strand_tokenizer_write(hid_t file, const strand_tokenizer *t, int writer, const char *path);
/* Read what strand_tokenizer_write stored (or a nucleotide dataset without the fingerprint) and
 * finish it. Refuses an unknown name, a vocabulary or fingerprint that does not match, naming
 * path. */
int strand_tokenizer_read(hid_t file, strand_tokenizer *t, const char *path);
/* A copy of src (tables included). */
int strand_tokenizer_copy(strand_tokenizer *dst, const strand_tokenizer *src);
/* Free the tables; safe on a zeroed struct. */
void strand_tokenizer_free(strand_tokenizer *t);

#endif
