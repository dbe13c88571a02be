#!/usr/bin/env bash
# Peak memory per rank and step time of the three activation-memory modes (train.recompute =
# none, block, and train.offload), each next to the memory model's prediction (--dry-run).
#
#   tests/bench/bench_memory.sh [BUILD_DIR]          (default: build)
#
# Trains STRAND_BENCH_STEPS (3) steps of E. coli K-12 windows of STRAND_BENCH_SEQ (524288) tokens
# at STRAND_BENCH_RANKS (2) ranks, d_model STRAND_BENCH_D_MODEL (64), for each layer list in
# STRAND_BENCH_LAYERS (default "8 x conv" and "6 x hyena"). A mode that runs out of memory is
# reported as such. Every mode must give the same losses; the line says whether they do.
# STRAND_BENCH_DIR (default $TMPDIR or /tmp) holds the dataset, runs and the offload files.
set -euo pipefail

build=${1:-build}
strand=$build/strand
[[ -x "$strand" ]] || { echo "bench_memory: $strand not found (build first)" >&2; exit 1; }
source_dir=$(cd "$(dirname "$0")/../.." && pwd)
genome=${STRAND_BENCH_GENOME:-$source_dir/data/ecoli_k12_mg1655.fa.gz}
[[ -r "$genome" ]] || { echo "bench_memory: $genome not readable (set STRAND_BENCH_GENOME)" >&2; exit 1; }
ranks=${STRAND_BENCH_RANKS:-2}
steps=${STRAND_BENCH_STEPS:-3}
seq=${STRAND_BENCH_SEQ:-524288}
d_model=${STRAND_BENCH_D_MODEL:-64}
layer_lists=${STRAND_BENCH_LAYERS:-"conv,conv,conv,conv,conv,conv,conv,conv hyena,hyena,hyena,hyena,hyena,hyena"}
work=$(mktemp -d "${STRAND_BENCH_DIR:-${TMPDIR:-/tmp}}/strand_bench_memory.XXXXXX")
trap 'rm -rf "$work"' EXIT
mpiexec=${STRAND_MPIEXEC:-mpirun}
[[ $(id -u) -eq 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OPENBLAS_NUM_THREADS=1

"$strand" prep --quiet --in "$genome" --out "$work/data.h5" --val-fraction 0.02 >/dev/null
for layers in $layer_lists; do
    losses=()
    for mode in train.recompute=none train.recompute=block "train.offload=$work/offload"; do
        args=(--set "data.path=$work/data.h5" --set "model.layers=$layers" --set "model.d_model=$d_model"
              --set "train.seq_len=$seq" --set "train.steps=$steps" --set train.log_every=1
              --set train.eval_windows=0 --set "run.dir=$work/run" --set "$mode")
        predicted=$("$strand" train --dry-run "${args[@]}" --ranks "$ranks" |
            sed -nE "s/^dry-run: sp=$ranks dp=1 .*predicted_peak_bytes=([0-9]+).*/\1/p" | head -n 1)
        rm -rf "$work/run"
        if ! "$mpiexec" --oversubscribe -n "$ranks" "$strand" train --quiet --no-resume "${args[@]}" \
            >/dev/null 2>"$work/err"; then
            printf '%-40s %-24s predicted %6.2f GiB  failed (out of memory?): %s\n' "$layers" "${mode%%=/*}" \
                "$(awk -v b="$predicted" 'BEGIN { print b / 2^30 }')" "$(tail -n 1 "$work/err")"
            continue
        fi
        python3 - "$work/run" "$layers" "${mode%%=/*}" "$predicted" <<'PY'
import json, sys
run, layers, mode, predicted = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
summary = json.load(open(run + "/summary.json"))
steps = [json.loads(line) for line in open(run + "/metrics.jsonl")]
later = steps[1:] or steps  # the first step includes planning
mean = lambda key: sum(s[key] for s in later) / len(later)
print(f"{layers:40s} {mode:24s} predicted {predicted / 2**30:6.2f} GiB  measured "
      f"{summary['peak_rss_bytes'] / 2**30:6.2f} GiB  step {mean('step_s'):6.2f} s  "
      f"offload thread {mean('offload_s'):5.2f} s/step")
PY
        losses+=("$(sed -E 's/.*"loss":([^,]*),.*/\1/' "$work/run/metrics.jsonl" | tr '\n' ' ')")
    done
    same=yes
    for l in "${losses[@]}"; do [[ "$l" == "${losses[0]}" ]] || same=no; done
    echo "$layers: losses identical in every mode that ran: $same"
    [[ $same == yes ]] || printf "  %s\n" "${losses[@]}"
done
