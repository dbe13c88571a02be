#!/usr/bin/env bash
# Quickstart: install/check dependencies, build strand, prepare the bundled lambda phage
# genome and train a small model on 2 MPI ranks with the sequence sharded across them.
#
#   jobs/quickstart.sh                              # about 1-3 minutes on 2 cores
#   jobs/quickstart.sh --set train.steps=50         # extra arguments go to `strand train`
#   STRAND_RUN_DIR=runs/mine jobs/quickstart.sh     # choose the run directory
set -euo pipefail

# Everything below is relative to the repository root, wherever this is called from.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
t0=$SECONDS
step() { printf '\n==> %s\n' "$*"; }
die() { echo "quickstart: error: $*" >&2; exit 1; }

step "Checking dependencies (jobs/setup.sh)"
jobs/setup.sh || die "missing dependencies; install them as shown above and rerun"

step "Building strand (Release, build/)"
mkdir -p build
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >build/configure.log 2>&1 ||
  { cat build/configure.log >&2; die "cmake configure failed (log: build/configure.log)"; }
cmake --build build -j"$(nproc)" --target strand || die "build failed"
strand=$root/build/strand

data=data/lambda.h5
# Reuse an existing dataset only if this strand can read it (the format may have changed).
if [[ -s "$data" ]] && "$strand" info "$data" >/dev/null 2>&1; then
  step "Dataset $data already present"
else
  step "Preparing $data from the bundled lambda phage genome"
  rm -f "$data"
  "$strand" prep --in data/lambda_phage_NC_001416.fa.gz --out "$data" --val-fraction 0.05 ||
    die "strand prep failed"
fi

run_dir=${STRAND_RUN_DIR:-runs/quickstart-$(date +%Y%m%d-%H%M%S)}
mpirun_args=(-n 2 --oversubscribe)
# Open MPI refuses to run as root unless told; containers and fresh VMs often are root.
if [[ $(id -u) -eq 0 ]]; then mpirun_args+=(--allow-run-as-root); fi
# Ranks yield when idle (cores may be shared) and use one BLAS thread each.
export OMPI_MCA_mpi_yield_when_idle=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
# mpirun gives the ranks a terminal even when this script's output goes to a file: say which.
if [[ -t 1 ]]; then export STRAND_PROGRESS=${STRAND_PROGRESS:-bar}; else export STRAND_PROGRESS=${STRAND_PROGRESS:-plain}; fi

step "Training: mpirun -n 2 strand train --config jobs/quickstart.ini (run dir $run_dir)"
t1=$SECONDS
mpirun "${mpirun_args[@]}" "$strand" train --config jobs/quickstart.ini \
  --set "run.dir=$run_dir" "$@" || die "strand train failed"
train_s=$((SECONDS - t1))

summary=$run_dir/summary.json
[[ -s "$summary" ]] || die "training finished but $summary is missing"
# summary.json is one flat JSON object; pull numbers out without needing jq or python.
json_num() { sed -n 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*\([-+0-9.eE]*\|null\).*/\1/p' "$summary" | head -n 1; }
first=$(json_num first_bpb) final=$(json_num final_bpb) val=$(json_num val_bpb) steps=$(json_num steps)
fmt() { if [[ -z "$1" || "$1" == null ]]; then echo "n/a"; else printf '%.3f' "$1"; fi; }

# A stable name for the latest quickstart run, unless the user owns a real directory there.
if [[ "$run_dir" == runs/quickstart-* && ( -L runs/quickstart || ! -e runs/quickstart ) ]]; then
  ln -sfn "${run_dir#runs/}" runs/quickstart
fi

step "Done in $((SECONDS - t0)) s (training $train_s s, ${steps:-?} steps)"
echo "  bits per base, training: start $(fmt "$first") -> end $(fmt "$final")"
echo "  bits per base, validation (held-out last 5% of the genome): $(fmt "$val")"
echo "  (2 bits/base = guessing A/C/G/T uniformly; an untrained model starts near 3 bits,"
echo "   uniform over strand's 8-token vocabulary)"
echo "  metrics:  $run_dir/metrics.jsonl (one JSON line per step)"
echo "  summary:  $summary"
echo "  config:   $run_dir/config.ini"
