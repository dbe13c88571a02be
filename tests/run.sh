#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this).
#
#   tests/run.sh                        all variants: float, double, sanitize
#   tests/run.sh -R config              extra arguments go to every ctest call
#   STRAND_TEST_VARIANTS=float tests/run.sh
#
# Each variant is configured and built in its own directory (build-test-<variant>) with
# warnings as errors, then tested with `ctest --output-on-failure -j2`. Tests labelled "slow"
# (the SLURM job test) run only in the float variant. Exit status: non-zero if any variant
# failed. Environment: STRAND_TEST_VARIANTS, STRAND_BUILD_JOBS (default: nproc),
# STRAND_CTEST_JOBS (default: 2).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
variants=${STRAND_TEST_VARIANTS:-float double sanitize}
build_jobs=${STRAND_BUILD_JOBS:-$(nproc)}
ctest_jobs=${STRAND_CTEST_JOBS:-2}

# mpirun as root, more ranks than cores, and ranks that yield instead of spinning (tests
# oversubscribe 2 cores). One BLAS thread per rank. OPENBLAS_CORETYPE is left as it is.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

banner() { printf '\n========== %s ==========\n' "$*"; }
fmt_s() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

banner "dependencies"
jobs/setup.sh || { echo "tests/run.sh: required packages are missing (see above)" >&2; exit 1; }
# SLURM is only for the job-script test, which skips itself without it.
jobs/setup.sh --slurm --quiet ||
  echo "tests/run.sh: warning: SLURM could not be installed; the SLURM test will be skipped"

declare -A result=() took=()
t_all=$SECONDS
for v in $variants; do
  case "$v" in
    float) dir=build-test-float
      flags=(-DCMAKE_BUILD_TYPE=Release -DSTRAND_REAL=float -DSTRAND_SANITIZE=OFF -DSTRAND_WERROR=ON) ;;
    double) dir=build-test-double
      flags=(-DCMAKE_BUILD_TYPE=Release -DSTRAND_REAL=double -DSTRAND_SANITIZE=OFF -DSTRAND_WERROR=ON) ;;
    sanitize) dir=build-test-asan
      flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRAND_REAL=float -DSTRAND_SANITIZE=ON -DSTRAND_WERROR=ON) ;;
    *) echo "tests/run.sh: unknown variant '$v' (known: float double sanitize)" >&2; exit 2 ;;
  esac
  # Slow tests once, in the float variant; the others exclude them.
  label_args=()
  [[ "$v" == float ]] || label_args=(-LE slow)

  t0=$SECONDS
  banner "$v: configure ($dir: ${flags[*]})"
  if ! cmake -S . -B "$dir" "${flags[@]}"; then
    result[$v]="FAILED (configure)"
  else
    banner "$v: build"
    if ! cmake --build "$dir" -j"$build_jobs"; then
      result[$v]="FAILED (build)"
    else
      banner "$v: ctest --output-on-failure -j$ctest_jobs ${label_args[*]} $*"
      if (cd "$dir" && ctest --output-on-failure -j"$ctest_jobs" "${label_args[@]}" "$@"); then
        result[$v]="passed"
      else
        result[$v]="FAILED (tests)"
      fi
    fi
  fi
  took[$v]=$((SECONDS - t0))
  echo "tests/run.sh: $v: ${result[$v]} in $(fmt_s "${took[$v]}")"
done

banner "summary"
status=0
for v in $variants; do
  printf '  %-9s %-18s %s\n' "$v" "${result[$v]}" "$(fmt_s "${took[$v]}")"
  [[ "${result[$v]}" == passed ]] || status=1
done
printf '  %-9s %-18s %s\n' total "$( ((status)) && echo FAILED || echo passed)" "$(fmt_s $((SECONDS - t_all)))"
exit "$status"
