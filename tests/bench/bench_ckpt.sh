#!/usr/bin/env bash
# Checkpoint write and read bandwidth against the raw disk, measured in the same run.
#
#   tests/bench/bench_ckpt.sh [BUILD_DIR]          (default: build)
#
# Writes one checkpoint of a model with >= 100M parameters (d_model 2048, 3 conv blocks with GELU
# MLPs: 100.7M parameters, 1.2 GB of parameters + AdamW moments in float) at 2 ranks through the
# checkpoint API (test_ckpt bench: no training), then reads it back cold (the file's pages are
# dropped from the page cache first). The reference is `dd if=/dev/zero bs=1M conv=fsync` of the
# same size on the same file system, and a cold `dd` read of that file.
#
# Environment: STRAND_BENCH_DIR (where the files go; default $TMPDIR or /tmp),
# STRAND_BENCH_RANKS (2), STRAND_BENCH_LAYERS (3), STRAND_BENCH_D_MODEL (2048),
# STRAND_BENCH_REPEATS (3). Prints one line per measurement and a summary with the ratios.
set -euo pipefail

build=${1:-build}
bench=$build/tests/test_ckpt
[[ -x "$bench" ]] || { echo "bench_ckpt: $bench not found (build the tests first)" >&2; exit 1; }
ranks=${STRAND_BENCH_RANKS:-2}
layers=${STRAND_BENCH_LAYERS:-3}
d_model=${STRAND_BENCH_D_MODEL:-2048}
repeats=${STRAND_BENCH_REPEATS:-3}
base=${STRAND_BENCH_DIR:-${TMPDIR:-/tmp}}
dir=$(mktemp -d "$base/strand-bench-ckpt.XXXXXX")
trap 'rm -rf "$dir"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

# dd's summary line ends in "<rate> <unit>/s": convert to MB/s.
dd_rate() {
  awk '/copied/ { r = $(NF - 1); u = $NF
    if (u == "GB/s") r *= 1000; else if (u == "kB/s") r /= 1000; else if (u == "B/s") r /= 1e6
    printf "%.1f", r }'
}
drop_cache() { dd if="$1" iflag=nocache count=0 status=none; } # POSIX_FADV_DONTNEED on the file

echo "bench_ckpt: files in $dir ($(df -h --output=source,fstype "$dir" | tail -n 1 | tr -s ' ')), $ranks ranks"
# Each repeat writes and reads a checkpoint, then runs dd on the same bytes right after, so that
# both see the same machine load; the summary takes medians over the repeats.
results=()
for ((i = 1; i <= repeats; i++)); do
  json=$(mpirun --oversubscribe -n "$ranks" "$bench" bench "$dir/ckpt" "$layers" "$d_model")
  echo "strand #$i: $json"
  field() { sed -E "s/.*\"$1\":([0-9.]+).*/\\1/" <<<"$json"; }
  bytes=$(field file_bytes)
  params=$(field parameters)
  w=$(field write_MBps)
  r=$(field read_MBps)
  rm -rf "$dir/ckpt"
  count=$(((bytes + 1048575) / 1048576))
  dw=$(dd if=/dev/zero of="$dir/dd.bin" bs=1M count="$count" conv=fsync 2>&1 | dd_rate)
  drop_cache "$dir/dd.bin"
  dr=$(dd if="$dir/dd.bin" of=/dev/null bs=1M 2>&1 | dd_rate)
  rm -f "$dir/dd.bin"
  echo "dd     #$i: write ${dw} MB/s (dd if=/dev/zero bs=1M count=$count conv=fsync), cold read ${dr} MB/s"
  results+=("$w $r $dw $dr")
done
printf '%s\n' "${results[@]}" | awk -v p="$params" -v b="$bytes" -v n="$ranks" '
  function median(a, k,   i, j, t) { for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j] < a[j - 1]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
  { k++; w[k] = $1; r[k] = $2; dw[k] = $3; dr[k] = $4; wr[k] = $1 / $3; rr[k] = $2 / $4 }
  END {
    printf "summary: %.1fM parameters, checkpoint %.2f GB, %d ranks, medians of %d repeats\n", p / 1e6, b / 1e9, n, k
    printf "  write %.0f MB/s, dd write %.0f MB/s: strand/dd = %.0f%% (median of the per-repeat ratios; target >= 50%%)\n", median(w, k), median(dw, k), 100 * median(wr, k)
    printf "  read  %.0f MB/s, dd cold read %.0f MB/s: strand/dd = %.0f%%\n", median(r, k), median(dr, k), 100 * median(rr, k)
  }'
