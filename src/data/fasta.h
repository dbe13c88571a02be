/* Streaming FASTA reader for plain or gzip-compressed files (strand prep).
 *
 * The file is read in 1 MiB blocks, hashed (SHA-256 of the raw bytes on disk) and, when it starts
 * with the gzip magic, inflated (multi-member streams such as bgzip are accepted). Records are
 * passed to callbacks as they are parsed, so memory does not grow with the input.
 *
 * Accepted text: '>' header lines (the record name is the first whitespace-delimited word; the
 * rest of the line is ignored), sequence lines of A C G T (tokens 0..3) and the IUPAC ambiguity
 * codes R Y S W K M B D H V N (token N), in either case; LF or CRLF line ends; blank lines anywhere;
 * lines starting with ';' (old-style comments) are skipped. Anything else is refused with
 * "file:line:column: unexpected character ...". */
#ifndef STRAND_FASTA_H
#define STRAND_FASTA_H

#include <stddef.h>
#include <stdint.h>

/* Longest accepted record name in bytes. */
#define STRAND_FASTA_NAME_MAX 255

typedef struct {
    /* A record starts; name is valid until record_end returns. */
    int (*record_begin)(void *user, const char *name);
    /* The next tokens (STRAND_TOKEN_A..N) of the current record. */
    int (*tokens)(void *user, const uint8_t *tokens, size_t count);
    /* The current record ended with `length` tokens (always > 0). */
    int (*record_end)(void *user, const char *name, int64_t length);
} strand_fasta_callbacks;

typedef struct {
    int64_t file_bytes; /* bytes on disk */
    int64_t text_bytes; /* bytes of FASTA text (after decompression) */
    int64_t n_records;
    int64_t n_tokens;
    int gzip;            /* 1 when the file was gzip-compressed */
    int gzip_members;    /* number of gzip members (bgzip files have many) */
    char sha256_hex[65]; /* SHA-256 of the bytes on disk */
} strand_fasta_summary;

/* Parse one FASTA(.gz) file, calling `callbacks` (any may be NULL) in order. A callback returning
 * non-zero stops parsing and that status is returned. `summary` may be NULL. Refuses a file with
 * no records, text before the first header, an empty record name, a record without sequence, an
 * unexpected character, and a truncated or corrupt gzip stream. */
int strand_fasta_read(const char *path, const strand_fasta_callbacks *callbacks, void *user,
                      strand_fasta_summary *summary);

/* Token of an input byte: 0..4, or 0xFF for a byte that is not a nucleotide code. */
uint8_t strand_fasta_token_of(unsigned char c);

#endif
