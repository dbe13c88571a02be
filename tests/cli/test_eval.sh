#!/usr/bin/env bash
# strand eval on a checkpoint reproduces the validation bits/base that training reported for the
# same windows (at another rank count), writes the per-position CSV, and refuses bad input; strand
# sample continues a motif, and its incremental and recompute modes give the same bases.
set -euo pipefail
: "${STRAND:?}" "${STRAND_SOURCE_DIR:?}" "${STRAND_MPIEXEC:?}"
work=$(mktemp -d /tmp/strand_eval.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$STRAND" prep --quiet --in "$STRAND_SOURCE_DIR/data/lambda_phage_NC_001416.fa.gz" --out l.h5 --val-fraction 0.1
"$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --quiet --set data.path=l.h5 --set run.dir=run \
    --set train.steps=30 --set train.seq_len=512 --set model.d_model=32 --set train.eval_windows=6
trained=$(sed -n 's/.*"val_bpb":\([0-9.eE+-]*\).*/\1/p' run/summary.json)
out=$("$STRAND_MPIEXEC" --oversubscribe -n 3 "$STRAND" eval --checkpoint run --windows 6 --per-position pp.csv --bin 64)
echo "$out"
evaluated=$(echo "$out" | sed -n 's/^validation bits\/base \([0-9.]*\) over 6 windows.*/\1/p')
[ -n "$evaluated" ] || { echo "FAIL: no validation line"; exit 1; }
awk -v a="$trained" -v b="$evaluated" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-5 * a) }' ||
    { echo "FAIL: eval $evaluated differs from training's $trained"; exit 1; }
# 512 positions in bins of 64: a header and 8 rows whose mean is the overall mean.
[ "$(wc -l <pp.csv)" -eq 9 ] || { echo "FAIL: pp.csv has $(wc -l <pp.csv) lines"; cat pp.csv; exit 1; }
mean=$(awk -F, 'NR > 1 { s += $4; n++ } END { printf "%.6f", s / n }' pp.csv)
awk -v a="$mean" -v b="$evaluated" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-4) }' ||
    { echo "FAIL: per-position mean $mean vs $evaluated"; exit 1; }
# Bad input: a missing checkpoint and a bad count, each one error line.
if "$STRAND" eval --checkpoint nothere 2>err.txt; then echo "FAIL: missing checkpoint accepted"; exit 1; fi
grep -q "strand eval: error:" err.txt || { echo "FAIL: no error line"; cat err.txt; exit 1; }
rc=0; "$STRAND" eval --checkpoint run --windows 0 2>err.txt || rc=$?
[ "$rc" -eq 2 ] || { echo "FAIL: --windows 0 gave exit $rc"; exit 1; }
echo "eval ok: training $trained, eval $evaluated, per-position mean $mean"

# strand sample: a model trained on a repeated 8-base motif continues the motif from a prompt,
# identically at 1 and 2 ranks (the draw at position t depends only on seed and t).
motif=ACGGTCAT
{ echo ">periodic"; for i in $(seq 1 500); do printf '%s%s\n' "$motif" "$motif"; done; } >periodic.fa
"$STRAND" prep --quiet --in periodic.fa --out p.h5 --val-fraction 0.1
"$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --quiet --set data.path=p.h5 --set run.dir=prun \
    --set train.steps=150 --set train.seq_len=256 --set model.d_model=32 --set model.layers=conv,conv \
    --set train.eval_windows=0
prompt=$motif$motif
one=$("$STRAND" sample --checkpoint prun --prompt "$prompt" --length 48 --seed 9 --temperature 0.5 | tail -n +2 | tr -d '\n')
two=$("$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" sample --checkpoint prun --prompt "$prompt" --length 48 \
    --seed 9 --temperature 0.5 | tail -n +2 | tr -d '\n')
expected=$(for i in 1 2 3 4 5 6 7 8; do printf '%s' "$motif"; done)
[ "$one" = "$expected" ] || { echo "FAIL: sample at 1 rank: $one, expected $expected"; exit 1; }
[ "$two" = "$one" ] || { echo "FAIL: sample at 2 ranks differs: $two"; exit 1; }
rc=0; "$STRAND" sample --checkpoint prun --prompt ACGU --length 4 2>err.txt || rc=$?
[ "$rc" -eq 1 ] && grep -q "character 4 is 'U'" err.txt || { echo "FAIL: bad prompt: exit $rc"; cat err.txt; exit 1; }
# The default is incremental decoding; re-running the whole window per base gives the same bases.
rec=$("$STRAND" sample --checkpoint prun --prompt "$prompt" --length 48 --seed 9 --temperature 0.5 --mode recompute |
    tail -n +2 | tr -d '\n')
[ "$rec" = "$one" ] || { echo "FAIL: sample --mode recompute: $rec, incremental: $one"; exit 1; }
echo "sample ok: $one"

# Both modes on a hybrid model (every mixer's step mode: hyena, attention with GQA and a window
# shorter than the sequence, s4d, conv), trained briefly on the motif so that its predictions
# depend on the context but stay spread at temperature 1: a mixer whose step mode drops or
# misplaces history changes the draws (checked by breaking hyena's, s4d's and conv's). The same
# bases from incremental and recompute, at 1 and 2 ranks.
"$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --quiet --set data.path=p.h5 --set run.dir=hrun \
    --set train.steps=25 --set train.seq_len=256 --set model.d_model=16 --set model.layers=hyena,attn,s4d,conv \
    --set attn.heads=2 --set attn.kv_heads=1 --set attn.window=48 --set s4d.state=8 --set train.eval_windows=0
gen() { "$@" | tail -n +2 | tr -d '\n'; }
hsample=(sample --checkpoint hrun --prompt ACGTTGCAAGC --length 120 --seed 3)
inc=$(gen "$STRAND" "${hsample[@]}")
inc2=$(gen "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" "${hsample[@]}" --mode incremental)
rec=$(gen "$STRAND" "${hsample[@]}" --mode recompute)
rec2=$(gen "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" "${hsample[@]}" --mode recompute)
[ "${#inc}" -eq 131 ] || { echo "FAIL: hybrid sample has ${#inc} bases: $inc"; exit 1; }
[ "$rec" = "$inc" ] || { echo "FAIL: hybrid sample: recompute $rec, incremental $inc"; exit 1; }
[ "$inc2" = "$inc" ] && [ "$rec2" = "$inc" ] || { echo "FAIL: hybrid sample at 2 ranks: $inc2 / $rec2"; exit 1; }
# hyena.max_len = 0 means the training window (256): longer samples are refused in both modes,
# at 2 ranks without a hang; an unknown mode is a usage error.
for mode in incremental recompute; do
    rc=0; "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" sample --checkpoint hrun --prompt ACGT --length 253 \
        --mode $mode 2>err.txt >/dev/null || rc=$?
    [ "$rc" -ne 0 ] && grep -q "hyena.max_len = 256" err.txt || { echo "FAIL: 257 positions, $mode: exit $rc"; cat err.txt; exit 1; }
done
rc=0; "$STRAND" sample --checkpoint hrun --prompt ACGT --length 4 --mode fast 2>err.txt || rc=$?
[ "$rc" -eq 2 ] || { echo "FAIL: --mode fast gave exit $rc"; cat err.txt; exit 1; }
echo "hybrid sample ok (both modes, 1 and 2 ranks): $inc"
