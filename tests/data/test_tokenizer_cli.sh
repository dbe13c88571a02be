#!/usr/bin/env bash
# Tokenizers end to end: lambda and H. pylori G27 prepared with kmer:1..8 and bpe:256..8192 and
# exported back gives exactly its bases (N and tails included), and a held-out genome encoded
# with another genome's BPE; training on k-mers reports bits per base (loss in bits over the
# bases its targets cover) the same at 1 to 4 ranks; sampling decodes tokens to bases; and the
# refusals (BPE with reverse-complement augmentation, a checkpoint of another BPE vocabulary).
set -u
: "${STRAND:?set STRAND to the strand binary}" "${STRAND_SOURCE_DIR:?set STRAND_SOURCE_DIR}"
: "${STRAND_MPIEXEC:=mpirun}"
data=$STRAND_SOURCE_DIR/data
work=$(mktemp -d /tmp/strand_tokenizer_cli_XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
checks=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}
check() { # check DESCRIPTION command...: the command succeeds
    checks=$((checks + 1))
    local what=$1
    shift
    "$@" || fail "$what"
}
run() { # run EXPECTED_STATUS command...: stdout in $work/out, stderr in $work/err
    local expected=$1
    shift
    checks=$((checks + 1))
    "$@" >"$work/out" 2>"$work/err"
    local status=$?
    if [ "$status" -ne "$expected" ]; then
        fail "exit status $status (expected $expected): $*"
        sed 's/^/    stderr: /' "$work/err" | tail -5 >&2
    fi
}
expect_in() {
    checks=$((checks + 1))
    grep -qF -- "$2" "$1" || { fail "$(basename "$1") lacks '$2'"; sed 's/^/    /' "$1" | tail -5 >&2; }
}
mpi() { "$STRAND_MPIEXEC" --oversubscribe -n "$1" "${@:2}"; }

# One '>name' line and one line of bases per record, as strand reads a FASTA: the first word of
# the header, letters upper-cased, IUPAC ambiguity codes as N.
records_of_fasta() {
    awk '/^>/ { printf "%s>%s\n", (NR > 1 ? "\n" : ""), substr($1, 2); next }
         { s = toupper($0); gsub(/\r/, "", s); gsub(/[RYSWKMBDHV]/, "N", s); printf "%s", s }
         END { printf "\n" }'
}
for genome in lambda_phage_NC_001416 hpylori_G27 ecoli_k12_mg1655; do
    zcat "$data/$genome.fa.gz" | records_of_fasta >"$work/$genome.expected"
done

# --- round trip: every tokenizer, the bundled genome and the held-out one (E. coli, the third,
# is the BPE corpus below)
for genome in lambda_phage_NC_001416 hpylori_G27; do
    for tokenizer in nucleotide kmer:1 kmer:2 kmer:3 kmer:4 kmer:5 kmer:6 kmer:7 kmer:8 bpe:256 bpe:1024 bpe:4096 bpe:8192; do
        out=$work/rt.h5
        run 0 "$STRAND" prep --in "$data/$genome.fa.gz" --out "$out" --tokenizer "$tokenizer" --val-fraction 0.1 --quiet
        run 0 "$STRAND" export "$out" --out "$work/rt.fa"
        records_of_fasta <"$work/rt.fa" >"$work/rt.records"
        checks=$((checks + 1))
        cmp -s "$work/rt.records" "$work/$genome.expected" || fail "$genome with $tokenizer does not decode to its bases"
        rm -f "$out" "$work/rt.fa"
    done
done

# --- a held-out genome with E. coli's BPE: one vocabulary, exact bases
run 0 "$STRAND" prep --in "$data/ecoli_k12_mg1655.fa.gz" --out "$work/ecoli_bpe.h5" --tokenizer bpe:4096 --val-fraction 0.02
expect_in "$work/out" "bpe:4096 (vocabulary 4096)"
run 0 "$STRAND" prep --in "$data/hpylori_G27.fa.gz" --out "$work/g27_from.h5" --tokenizer-from "$work/ecoli_bpe.h5" --quiet
run 0 "$STRAND" export "$work/g27_from.h5" --out "$work/g27_from.fa"
checks=$((checks + 1))
records_of_fasta <"$work/g27_from.fa" | cmp -s - "$work/hpylori_G27.expected" || fail "G27 with E. coli's BPE does not decode to its bases"
run 0 "$STRAND" info "$work/g27_from.h5"
expect_in "$work/out" "tokenizer: bpe:4096 version 1"
expect_in "$work/out" "bases: 1,652,982, mean"

# --- the kmer datasets and training: bits per base
run 0 "$STRAND" prep --in "$data/lambda_phage_NC_001416.fa.gz" --out "$work/k3.h5" --tokenizer kmer:3 --val-fraction 0.1
expect_in "$work/out" "kmer:3 (vocabulary 72) 16170 tokens"
run 0 "$STRAND" info "$work/k3.h5"
expect_in "$work/out" "mean 2.9995 bases per token"
cat >"$work/k3.ini" <<INI
[model]
d_model = 32
layers = conv,attn
[train]
seq_len = 256
steps = 12
lr = 3e-3
warmup_steps = 2
rc_augment = true
log_every = 4
eval_windows = 6
[data]
path = $work/k3.h5
[parallel]
sp = 2
INI
run 0 mpi 2 "$STRAND" train --config "$work/k3.ini" --set "run.dir=$work/k3run"
expect_in "$work/out" "tokenizer kmer:3 (vocabulary 72): a window covers about 768 bases"
s=$work/k3run/summary.json
checks=$((checks + 1))
# A kmer:3 target covers 3 bases (its record's last token 1): bits per base is a third of per token.
jq -e '(.val_bpb * 3 / .val_bits_per_token - 1 | fabs) < 1e-3 and .val_bpb > 0.3 and .val_bpb < 3' "$s" >/dev/null ||
    fail "val_bpb is not a third of val_bits_per_token: $(cat "$s")"
checks=$((checks + 1))
jq -se 'all(.[]; (.bpb * 3 / .bits_per_token - 1 | fabs) < 1e-3)' "$work/k3run/metrics.jsonl" >/dev/null ||
    fail "metrics.jsonl: bpb is not a third of bits_per_token"
# The same checkpoint evaluated at 1, 2, 3 and 4 ranks (uneven shards at 3): one figure.
ckpt=$work/k3run/checkpoints
run 0 mpi 1 "$STRAND" eval --checkpoint "$ckpt" --windows 6 --set parallel.sp=1
one=$(sed -n 's/^validation bits\/base \([0-9.]*\) .*/\1/p' "$work/out")
expect_in "$work/out" "validation bits/token"
for n in 2 3 4; do
    run 0 mpi $n "$STRAND" eval --checkpoint "$ckpt" --windows 6 --set parallel.sp=$n
    many=$(sed -n 's/^validation bits\/base \([0-9.]*\) .*/\1/p' "$work/out")
    checks=$((checks + 1))
    awk -v a="$one" -v b="$many" 'BEGIN { exit !(a > 0 && (a - b) ^ 2 < 1e-10) }' ||
        fail "validation bits/base at 1 rank ($one) and $n ranks ($many) differ"
done

# --- sampling: the prompt encoded with the checkpoint's tokenizer, tokens decoded to bases
run 0 mpi 2 "$STRAND" sample --checkpoint "$ckpt" --prompt acgtacgtac --length 20 --seed 5
checks=$((checks + 1))
sampled=$(grep -v '^>' "$work/out" | tr -d '\n')
[[ $sampled =~ ^ACGTACGTAC[ACGT]{20,60}$ ]] || fail "sample is not the prompt and 20 tokens of bases: $sampled"

# --- a vocabulary above 65535 tokens (kmer:8: 32-bit tokens) trains
run 0 "$STRAND" prep --in "$data/lambda_phage_NC_001416.fa.gz" --out "$work/k8.h5" --tokenizer kmer:8 --val-fraction 0.2
run 0 "$STRAND" info "$work/k8.h5"
expect_in "$work/out" "tokens: 32-bit"
run 0 mpi 2 "$STRAND" train --config "$work/k3.ini" --set "data.path=$work/k8.h5" --set train.seq_len=64 \
    --set train.steps=2 --set model.d_model=8 --set "run.dir=$work/k8run"
checks=$((checks + 1))
jq -e '.val_bpb > 0' "$work/k8run/summary.json" >/dev/null || fail "kmer:8 run has no validation bits per base"

# --- refusals
run 0 "$STRAND" prep --in "$data/lambda_phage_NC_001416.fa.gz" --out "$work/b512.h5" --tokenizer bpe:512 --val-fraction 0.1 --quiet
run 1 mpi 2 "$STRAND" train --config "$work/k3.ini" --set "data.path=$work/b512.h5" --set "run.dir=$work/b512run"
expect_in "$work/err" "have no reverse complements"
run 0 mpi 2 "$STRAND" train --config "$work/k3.ini" --set "data.path=$work/b512.h5" --set train.rc_augment=false \
    --set train.steps=2 --set "run.dir=$work/b512run"
# Another corpus' bpe:512: the same shapes, other tokens.
run 0 "$STRAND" prep --in "$data/hpylori_G27.fa.gz" --out "$work/g512.h5" --tokenizer bpe:512 --val-fraction 0.1 --quiet
run 1 mpi 2 "$STRAND" eval --checkpoint "$work/b512run/checkpoints" --set "data.path=$work/g512.h5"
expect_in "$work/err" "fingerprint"
run 2 "$STRAND" prep --in "$data/lambda_phage_NC_001416.fa.gz" --out "$work/x.h5" --tokenizer kmer:3 --tokenizer-from "$work/k3.h5"
run 1 "$STRAND" prep --in "$data/lambda_phage_NC_001416.fa.gz" --out "$work/x.h5" --tokenizer kmer:9
expect_in "$work/err" "kmer:9"
checks=$((checks + 1))
[ ! -e "$work/x.h5" ] && [ ! -e "$work/x.h5.tmp" ] || fail "a refused prep left a file"

echo "test_tokenizer_cli: $checks checks, $failures failures"
[ "$failures" -eq 0 ]
