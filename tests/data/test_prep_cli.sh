#!/usr/bin/env bash
# strand prep / strand info from the command line: the lambda phage quick-start corpus, splits,
# bad inputs (exit status 1 and ONE error line naming file:line:column), usage errors (status 2),
# and the same behaviour under mpirun with two ranks.
set -u
: "${STRAND:?set STRAND to the strand binary}" "${STRAND_SOURCE_DIR:?set STRAND_SOURCE_DIR}"
fixtures=$STRAND_SOURCE_DIR/tests/data/fixtures
lambda=$STRAND_SOURCE_DIR/data/lambda_phage_NC_001416.fa.gz
work=$(mktemp -d /tmp/strand_prep_cli_XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
checks=0

fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# run EXPECTED_STATUS command...: runs it with stdout in $work/out and stderr in $work/err.
run() {
    local expected=$1
    shift
    checks=$((checks + 1))
    "$@" >"$work/out" 2>"$work/err"
    local status=$?
    if [ "$status" -ne "$expected" ]; then
        fail "exit status $status (expected $expected): $*"
        sed 's/^/    stderr: /' "$work/err" >&2
    fi
}

# expect_in FILE TEXT: FILE contains TEXT (fixed string).
expect_in() {
    checks=$((checks + 1))
    grep -qF -- "$2" "$1" || { fail "$(basename "$1") lacks '$2'"; sed 's/^/    /' "$1" >&2; }
}

# one_error_line COMMAND_NAME: stderr holds exactly one line from strand, in the agreed format.
one_error_line() {
    checks=$((checks + 1))
    local lines
    lines=$(grep -c '^strand' "$work/err")
    [ "$lines" -eq 1 ] || fail "expected one error line, got $lines"
    grep -q "^strand $1: error: " "$work/err" || fail "error line not 'strand $1: error: ...'"
}

# --- the quick-start genome
run 0 "$STRAND" prep --in "$lambda" --out "$work/lambda.h5"
expect_in "$work/out" "1 record, 48502 bases, nucleotide (vocabulary 8) 48502 tokens (train 48502, val 0)"
[ -f "$work/lambda.h5" ] || fail "no output file"
[ ! -e "$work/lambda.h5.tmp" ] || fail "temporary file left behind"
run 0 "$STRAND" info "$work/lambda.h5"
expect_in "$work/out" "format version 1"
expect_in "$work/out" "records: 1, tokens: 48,502"
expect_in "$work/out" "gi|9626243|ref|NC_001416.1|"
expect_in "$work/out" "08fe207fcb4bbe47e80cc7469e68d1f1d8d497a836fe1c09f5a9734d2e4cd9e0"
expect_in "$work/out" "composition: A 0.2543  C 0.2343  G 0.2643  T 0.2471  N 0.0000"

run 0 "$STRAND" prep --in "$lambda" "$fixtures/good_crlf_iupac.fa" --out="$work/split.h5" --val-fraction 0.1 --quiet
[ ! -s "$work/out" ] || fail "--quiet printed something"
run 0 "$STRAND" info "$work/split.h5"
expect_in "$work/out" "records: 2, tokens: 48,527"
expect_in "$work/out" "split: train 43,675 tokens in 2 ranges, val 4,852 tokens in 2 ranges"
run 0 "$STRAND" prep --in "$lambda" --in "$fixtures/good_crlf_iupac.fa" --out "$work/named.h5" --val-records 'mixed' --verbose
expect_in "$work/out" "good_crlf_iupac.fa: mixed, 25 tokens"
expect_in "$work/out" "(train 48502, val 25)"

# --- bad inputs: status 1, one line, file:line:column where it applies, no output left behind
check_bad() {
    local fixture=$1 message=$2
    run 1 "$STRAND" prep --in "$fixtures/$fixture" --out "$work/bad.h5"
    one_error_line prep
    expect_in "$work/err" "$message"
    [ ! -e "$work/bad.h5" ] && [ ! -e "$work/bad.h5.tmp" ] || fail "$fixture: output left behind"
}
check_bad bad_char.fa "bad_char.fa:3:7: unexpected character 'X' (0x58) in sequence of record seq1"
check_bad text_before_header.fa "text_before_header.fa:1:1: sequence text before the first '>' header"
check_bad empty_record.fa "empty_record.fa:1: record empty has no sequence"
check_bad no_records.fa "no_records.fa: no FASTA records"
check_bad truncated.fa.gz "truncated.fa.gz: truncated gzip stream"
check_bad does_not_exist.fa "does_not_exist.fa: no such file"
check_bad cr_only.fa "cr_only.fa:1:23: carriage return without a line feed: CR-only line ends are not supported (convert with tr '\\r' '\\n')"
run 1 "$STRAND" prep --in "$lambda" --out "$work/bad.h5" --val-records NC_001416.1
one_error_line prep
expect_in "$work/err" "--val-records: no record named NC_001416.1"
run 1 "$STRAND" prep --in "$lambda" --out "$work/no/such/dir/x.h5"
one_error_line prep

# --- an input that is a file prep writes (the output, or the output's temporary file) is refused
# before anything is created, however it is named; the input survives byte for byte
cp "$fixtures/good_crlf_iupac.fa" "$work/g.tmp"
mkdir -p "$work/sub"
ln -s "$work/g.tmp" "$work/g_link.fa"
for case in "$work/g.tmp|$work/g" "$work/g.tmp|$work/sub/../g" "$work/g_link.fa|$work/g" "$work/g.tmp|$work/g.tmp"; do
    input=${case%|*} output=${case#*|}
    run 1 "$STRAND" prep --in "$input" --out "$output"
    one_error_line prep
    expect_in "$work/err" "input $input and the"
    expect_in "$work/err" "are the same file: prep would overwrite its input"
    checks=$((checks + 1))
    cmp -s "$fixtures/good_crlf_iupac.fa" "$work/g.tmp" || fail "prep --in $input --out $output changed its input"
done
[ ! -e "$work/g" ] || fail "an output was created for an input prep would overwrite"

# --- record names are kept whole up to 255 bytes: two that share their first 127 stay apart
long=$(printf 'x%.0s' $(seq 1 127))
printf '>%s_one\nACGT\n>%s_two\nGG\n' "$long" "$long" >"$work/long.fa"
run 0 "$STRAND" prep --in "$work/long.fa" --out "$work/long.h5" --val-records "${long}_two"
expect_in "$work/out" "6 tokens (train 4, val 2)"
run 0 "$STRAND" info "$work/long.h5"
expect_in "$work/out" "${long}_one"
expect_in "$work/out" "${long}_two"

# --- /tokens integrity: Fletcher32 per chunk, read by HDF5's own tools; older datasets still read
run 0 "$STRAND" info "$work/lambda.h5"
expect_in "$work/out" "tokens: 16-bit, Fletcher32 checksums per chunk"
gzip -dc "$fixtures/old_strand_dataset.h5.gz" >"$work/old.h5"
run 0 "$STRAND" info "$work/old.h5"
expect_in "$work/out" "tokens: 8-bit, no per-chunk checksums (written by an older strand)"
expect_in "$work/out" "records: 1, tokens: 25"
expect_in "$work/out" "composition: A 0.1200  C 0.1200  G 0.1200  T 0.1200  N 0.5200"
checks=$((checks + 1))
[ "$(head -c 8 "$work/lambda.h5")" = STRANDFS ] || fail "no whole-file checksum header at the start of lambda.h5"
if command -v h5dump >/dev/null; then
    run 0 h5dump -H "$work/lambda.h5" # HDF5 skips the user block that holds the header
    expect_in "$work/out" 'DATASET "tokens"'
    run 0 h5dump -p -H -d /tokens "$work/lambda.h5"
    expect_in "$work/out" "COMPRESSION DEFLATE { LEVEL 1 }"
    expect_in "$work/out" "CHECKSUM FLETCHER32"
    run 0 h5dump -d /tokens -y -o "$work/tokens.txt" "$work/lambda.h5" # every chunk verified and inflated
    checks=$((checks + 1))
    [ "$(tr -cd '0-9' <"$work/tokens.txt" | wc -c)" -eq 48502 ] || fail "h5dump did not read 48502 tokens"
fi

# --- usage errors: status 2, naming the problem
run 2 "$STRAND" prep --in "$lambda" --out "$work/u.h5" --bogus
one_error_line prep
expect_in "$work/err" "unknown option '--bogus'"
run 2 "$STRAND" prep --in "$lambda"
expect_in "$work/err" "--out is required"
run 2 "$STRAND" prep --out "$work/u.h5"
expect_in "$work/err" "--in is required"
run 2 "$STRAND" prep --in "$lambda" --out "$work/u.h5" --val-fraction 1.5
expect_in "$work/err" "--val-fraction needs a number in [0, 1), not '1.5'"
run 2 "$STRAND" prep stray --in "$lambda" --out "$work/u.h5"
expect_in "$work/err" "unexpected argument 'stray'"
run 0 "$STRAND" prep --help
expect_in "$work/out" "usage: strand prep"

# --- info refusals
run 1 "$STRAND" info "$fixtures/bad_char.fa"
one_error_line info
expect_in "$work/err" "bad_char.fa: not an HDF5 file or corrupt"
run 1 "$STRAND" info "$work/missing.h5"
expect_in "$work/err" "missing.h5: no such file"
run 2 "$STRAND" info
run 2 "$STRAND" info a.h5 b.h5
run 0 "$STRAND" info --help

# --- under mpirun: rank 0 works, every rank exits with the same status, one error line
if [ -n "${STRAND_MPIEXEC:-}" ]; then
    mpi=("$STRAND_MPIEXEC" --oversubscribe -n 2)
    run 0 "${mpi[@]}" "$STRAND" prep --in "$lambda" --out "$work/mpi.h5"
    checks=$((checks + 1))
    [ "$(grep -c '^strand prep: wrote' "$work/out")" -eq 1 ] || fail "summary not printed exactly once under mpirun"
    run 0 "${mpi[@]}" "$STRAND" info "$work/mpi.h5"
    expect_in "$work/out" "records: 1, tokens: 48,502"
    run 1 "${mpi[@]}" "$STRAND" prep --in "$fixtures/bad_char.fa" --out "$work/bad.h5"
    one_error_line prep
    expect_in "$work/err" "bad_char.fa:3:7: unexpected character 'X'"
    run 2 "${mpi[@]}" "$STRAND" prep --bogus
    one_error_line prep
fi

echo "test_prep_cli: $checks checks, $failures failed"
[ "$failures" -eq 0 ]
