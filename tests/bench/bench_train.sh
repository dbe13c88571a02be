#!/usr/bin/env bash
# strand bench train against tests/bench/torch_model.py, same run: for each model configuration
# and each repeat, strand trains W + S steps on 1 rank (1 BLAS thread) with --dump, then PyTorch
# (torch.set_num_threads(1)) trains the same model from the same parameters on the same windows.
# Writes one JSON line per (model, repeat) from torch_model.py (which carries strand's timing,
# the loss differences and the ratio) to $OUT/bench_train.jsonl, and a table to stdout and
# $OUT/bench_train.md: medians over the repeats of each side's median step time, the median and
# range of the per-repeat ratio torch / strand, and the final losses of the last repeat.
#
# usage: tests/bench/bench_train.sh [STRAND_BINARY]
#   env: MODELS ("conv hyena attn hybrid": tests/bench/models/<name>.ini, or paths), REPEAT (3),
#        STEPS (5), WARMUP (2), OUT (/tmp/strand_bench_train), MPIRUN (mpirun), PYTHON (/usr/bin/python3)
# Both sides use the same OpenBLAS. Where OPENBLAS_CORETYPE is unset and OpenBLAS falls back to
# its Prescott kernels on a CPU model it does not know, strand starts itself again on AVX-512 or
# AVX2 kernels (src/cli/main.c) and PyTorch would not: the script then sets OPENBLAS_CORETYPE to
# the core strand chose (its blas_core), so that both sides run the same kernels.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
strand=${1:-${STRAND:-$root/build/strand}}
[ -x "$strand" ] || { echo "bench_train: no strand binary at $strand" >&2; exit 1; }
models=${MODELS:-"conv hyena attn hybrid"}
repeat=${REPEAT:-3}
steps=${STEPS:-5}
warmup=${WARMUP:-2}
out=${OUT:-/tmp/strand_bench_train}
mpirun=${MPIRUN:-mpirun}
python=${PYTHON:-/usr/bin/python3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
    core=$("$strand" bench fftconv --length 64 --channels 4 --repeat 1 --no-check | jq -r '.blas_core // empty')
    [ -n "$core" ] && export OPENBLAS_CORETYPE=$core
fi
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-} (both sides)" >&2
mkdir -p "$out"
lines=$out/bench_train.jsonl
: >"$lines"
for model in $models; do
    ini=$model
    [ -f "$ini" ] || ini=$root/tests/bench/models/$model.ini
    for r in $(seq 1 "$repeat"); do
        dump=$out/dump_$(basename "$ini" .ini)
        rm -rf "$dump"
        "$mpirun" -n 1 "$strand" bench train --config "$ini" --steps "$steps" --warmup "$warmup" \
            --dump "$dump" >/dev/null
        line=$("$python" "$root/tests/bench/torch_model.py" --dump "$dump" --threads 1)
        jq -c --arg model "$(basename "$ini" .ini)" --argjson repeat "$r" '{model: $model, repeat: $repeat} + .' \
            <<<"$line" | tee -a "$lines" |
            jq -r '"\(.model) #\(.repeat): strand \(.strand_step_s) s, torch \(.step_s) s, ratio \(.torch_over_strand), max loss rel diff \(.max_loss_rel_diff)"' >&2
    done
done
jq -rs '
  def med: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def r(n): . * pow(10; n) | round / pow(10; n);
  "| model | layers | seq_len | strand step s (median, range) | strand tokens/s | torch step s (median, range) | ratio torch/strand (median, range) | strand loss | torch loss | diff | max rel diff, all steps |",
  "|---|---|---|---|---|---|---|---|---|---|---|",
  (group_by(.model)[] | . as $g | ($g | map(.strand_step_s)) as $s | ($g | map(.step_s)) as $t |
   ($g | map(.torch_over_strand)) as $q | $g[-1] as $last |
   "| \($last.model) | \($last.layers) | \($last.seq_len) | \($s | med | r(4)) (\($s | min | r(4))-\($s | max | r(4))) | \(($last.seq_len * $last.dp) / ($s | med) | round) | \($t | med | r(4)) (\($t | min | r(4))-\($t | max | r(4))) | \($q | med | r(2)) (\($q | min | r(2))-\($q | max | r(2))) | \($last.strand_final_loss) | \($last.final_loss | r(8)) | \($last.final_loss_diff | r(9)) | \($g | map(.max_loss_rel_diff) | max) |")
' "$lines" | tee "$out/bench_train.md"
