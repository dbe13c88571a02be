#!/usr/bin/env bash
# strand plan against measured training steps: calibrate this machine, then train a conv, an
# attention and a hyena model at 1 and 2 ranks and put each measured step time (median over the
# steps after the first two) next to `strand plan`'s prediction, and the plan's memory per rank
# next to `strand train --dry-run`'s and the measured peak.
#
#   tests/bench/bench_plan.sh [BUILD_DIR]          (default: build)
#
# Writes STRAND_BENCH_OUT (default plan_accuracy) /plan_accuracy.csv and .md, and the calibration
# of each model's runs, machine-MODEL.json.
# STRAND_BENCH_STEPS (8) steps per run, STRAND_BENCH_RANKS ("1 2"), STRAND_BENCH_MODELS (conv
# attn hyena), STRAND_BENCH_GENOME (E. coli K-12). Run it with nothing else on the cores.
set -euo pipefail

build=${1:-build}
strand=$build/strand
[[ -x "$strand" ]] || { echo "bench_plan: $strand not found (build first)" >&2; exit 1; }
source_dir=$(cd "$(dirname "$0")/../.." && pwd)
genome=${STRAND_BENCH_GENOME:-$source_dir/data/ecoli_k12_mg1655.fa.gz}
[[ -r "$genome" ]] || { echo "bench_plan: $genome not readable (set STRAND_BENCH_GENOME)" >&2; exit 1; }
steps=${STRAND_BENCH_STEPS:-8}
rank_list=${STRAND_BENCH_RANKS:-"1 2"}
models=${STRAND_BENCH_MODELS:-"conv attn hyena"}
out=${STRAND_BENCH_OUT:-plan_accuracy}
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/strand_bench_plan.XXXXXX")
trap 'rm -rf "$work"' EXIT
mpiexec=${STRAND_MPIEXEC:-mpirun}
[[ $(id -u) -eq 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1

# The models: layer list, width, window (sized so a step takes about a second here).
model_args() {
  case "$1" in
    conv) echo "model.layers=conv,conv,conv,conv model.d_model=128 train.seq_len=32768" ;;
    attn) echo "model.layers=attn,attn model.d_model=128 attn.heads=2 train.seq_len=8192" ;;
    hyena) echo "model.layers=hyena,hyena model.d_model=64 train.seq_len=65536" ;;
    *) echo "bench_plan: unknown model '$1' (conv, attn, hyena)" >&2; exit 2 ;;
  esac
}

"$strand" prep --quiet --in "$genome" --out "$work/data.h5" --val-fraction 0.02 >/dev/null
max_ranks=$(printf '%s\n' $rank_list | sort -n | tail -n 1)
# The rates of these shared machines drift by up to 2x within minutes (sgemm 14-31 GFLOP/s in
# four calibrations in 20 minutes): calibrate again right before each model's runs.
calibrate() {
  "$mpiexec" -n "$max_ranks" "$strand" calibrate --out "$out/machine-$1.json" --dir "$work" >"$out/calibrate-$1.txt"
}

csv=$out/plan_accuracy.csv
echo "model,ranks,measured_step_s,predicted_step_s,ratio,measured_comm_s,predicted_comm_s,dry_run_bytes,plan_bytes,peak_rss_bytes" >"$csv"
for model in $models; do
  calibrate "$model"
  sets=()
  for kv in $(model_args "$model"); do sets+=(--set "$kv"); done
  sets+=(--set "data.path=$work/data.h5" --set "train.steps=$steps" --set train.log_every=1
    --set train.eval_windows=0 --set parallel.sp=0 --set parallel.dp=1)
  for r in $rank_list; do
    run=$work/run-$model-$r
    "$mpiexec" -n "$r" "$strand" train --quiet "${sets[@]}" --set "run.dir=$run" >/dev/null
    # median over the steps after the first two (warm-up: page faults, FFTW plans, caches)
    measured=$(jq -s '[.[2:][] | .step_s] | sort | .[length / 2 | floor]' "$run/metrics.jsonl")
    comm=$(jq -s '[.[2:][] | .comm_s] | sort | .[length / 2 | floor]' "$run/metrics.jsonl")
    peak=$(jq -s 'map(.peak_rss_bytes) | max' "$run/metrics.jsonl")
    plan=$("$strand" plan --json --ranks "$r" --machine "$out/machine-$model.json" "${sets[@]}")
    predicted=$(jq -r .step_s <<<"$plan")
    predicted_comm=$(jq -r .comm_s <<<"$plan")
    plan_bytes=$(jq -r .memory_bytes <<<"$plan")
    dry=$("$strand" train --dry-run "${sets[@]}" --ranks "$r" |
      sed -nE "s/^dry-run: sp=$r dp=1 .*predicted_peak_bytes=([0-9]+).*/\1/p" | tail -n 1)
    ratio=$(jq -n "$predicted / $measured")
    echo "$model,$r,$measured,$predicted,$ratio,$comm,$predicted_comm,$dry,$plan_bytes,$peak" >>"$csv"
    printf 'bench_plan: %-6s %d rank(s): measured %.3f s, plan %.3f s (x%.2f); memory dry-run %s, plan %s\n' \
      "$model" "$r" "$measured" "$predicted" "$ratio" "$dry" "$plan_bytes"
  done
done

{
  echo "| model | ranks | measured step (s) | plan (s) | plan / measured | comm measured / plan (s) | memory: dry run / plan (MiB) | peak RSS (MiB) |"
  echo "|---|---|---|---|---|---|---|---|"
  tail -n +2 "$csv" | while IFS=, read -r m r ms ps ratio mc pc dry pb peak; do
    printf '| %s | %s | %.3f | %.3f | %.2f | %.3f / %.3f | %.1f / %.1f | %.1f |\n' "$m" "$r" "$ms" "$ps" "$ratio" \
      "$mc" "$pc" "$(jq -n "$dry / 1048576")" "$(jq -n "$pb / 1048576")" "$(jq -n "$peak / 1048576")"
  done
} >"$out/plan_accuracy.md"
cat "$out/plan_accuracy.md"
