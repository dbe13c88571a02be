#!/usr/bin/env bash
#SBATCH --job-name=strand-tokenizers
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=tokenizers-%j.out
#SBATCH --signal=B:USR1@120
#
# The tokenizer comparison (README "Tokenizers"): E. coli K-12 prepared with each tokenizer
# (the last 2% of the genome is validation), then jobs/experiments/tokenizers.ini trained on each
# with windows of the same number of bases (BASES, default 8192: train.seq_len = BASES / the
# dataset's mean bases per token) for the same steps. Writes $OUT/tokenizers.csv (tokenizer,
# vocabulary, bases per token, window in tokens, validation bits per base and per token, seconds)
# and $OUT/tokenizers.md (README's table).
#
#   sbatch jobs/experiments/tokenizers.sh          # on a cluster (srun launches each run)
#   jobs/experiments/tokenizers.sh                 # here: mpirun -n ${RANKS:-2}
#   TOKENIZERS="nucleotide kmer:6" STEPS=50 jobs/experiments/tokenizers.sh
#
# A run whose summary.json exists is not repeated. Environment: STRAND (default build/strand),
# OUT (runs/tokenizers), GENOME (the E. coli K-12 FASTA), TOKENIZERS, BASES, STEPS (300),
# RANKS (2, outside SLURM), LAUNCH (a launcher command instead of srun or mpirun).
set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-$(dirname "${BASH_SOURCE[0]}")/../..}"
STRAND=${STRAND:-build/strand}
OUT=${OUT:-runs/tokenizers}
GENOME=${GENOME:-data/ecoli_k12_mg1655.fa.gz}
TOKENIZERS=${TOKENIZERS:-nucleotide kmer:3 kmer:6 bpe:4096}
BASES=${BASES:-8192}
STEPS=${STEPS:-300}
RANKS=${RANKS:-2}
die() { echo "tokenizers.sh: $*" >&2; exit 2; }
[[ -x $STRAND ]] || die "no strand binary at $STRAND (build first, or set STRAND)"
[[ -r $GENOME ]] || die "cannot read the genome $GENOME (set GENOME)"
[[ $BASES =~ ^[0-9]+$ && $BASES -ge 64 ]] || die "BASES must be a whole number >= 64, not '$BASES'"
[[ $STEPS =~ ^[0-9]+$ && $STEPS -ge 1 ]] || die "STEPS must be a whole number >= 1, not '$STEPS'"
if [[ -n ${LAUNCH:-} ]]; then read -r -a launch <<<"$LAUNCH"
elif [[ -n ${SLURM_JOB_ID:-} ]]; then launch=(srun --mpi=pmix)
else launch=(mpirun -n "$RANKS" --oversubscribe); [[ $(id -u) -eq 0 ]] && launch+=(--allow-run-as-root)
fi
trap 'echo "tokenizers.sh: signal: stopping (resubmit to carry on)" >&2; kill 0' USR1 TERM INT
mkdir -p "$OUT/data" "$OUT/runs"
csv=$OUT/tokenizers.csv
echo "tokenizer,vocabulary,bases_per_token,seq_len,window_bases,steps,val_bpb,val_bits_per_token,seconds" >"$csv.tmp"
for tk in $TOKENIZERS; do
  name=${tk//:/_}
  data=$OUT/data/ecoli_$name.h5
  [[ -f $data ]] || "$STRAND" prep --in "$GENOME" --out "$data" --tokenizer "$tk" --val-fraction 0.02 --quiet
  info=$("$STRAND" info "$data")
  bpt=$(sed -n 's/^bases: .*mean \([0-9.]*\) bases per token.*/\1/p' <<<"$info")
  vocab=$(sed -n 's/^tokenizer: .*vocabulary \([0-9]*\),.*/\1/p' <<<"$info")
  seq_len=$(awk -v b="$BASES" -v t="$bpt" 'BEGIN { n = int(b / t + 0.5); print n - n % 2 }')
  run=$OUT/runs/$name
  if [[ ! -f $run/summary.json ]]; then
    echo "== $tk: vocabulary $vocab, $bpt bases per token, windows of $seq_len tokens"
    "${launch[@]}" "$STRAND" train --config jobs/experiments/tokenizers.ini --set "data.path=$data" \
      --set "train.seq_len=$seq_len" --set "train.steps=$STEPS" --set "run.dir=$run" --no-resume \
      >"$run.log" 2>&1 || { tail -5 "$run.log" >&2; die "training with $tk failed (log: $run.log)"; }
  fi
  s=$run/summary.json
  printf '%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$tk" "$vocab" "$bpt" "$seq_len" \
    "$(awk -v n="$seq_len" -v t="$bpt" 'BEGIN { printf "%.0f", n * t }')" "$STEPS" \
    "$(jq -r .val_bpb "$s")" "$(jq -r .val_bits_per_token "$s")" "$(jq -r .seconds "$s")" >>"$csv.tmp"
done
mv "$csv.tmp" "$csv"
{
  echo "| tokenizer | vocabulary | bases per token | window (tokens) | window (bases) | validation bits per base | bits per token | seconds |"
  echo "|---|---|---|---|---|---|---|---|"
  tail -n +2 "$csv" | awk -F, '{ printf "| %s | %s | %.3f | %s | %s | %.4f | %.4f | %.0f |\n", $1, $2, $3, $4, $5, $7, $8, $9 }'
} >"$OUT/tokenizers.md"
cat "$OUT/tokenizers.md"
