#!/usr/bin/env bash
# jobs/scaling/sweep.sh on tiny points: a 2-point strong sweep of the conv mixer's bench (which
# calibrates first, --quick) and a 2-point weak sweep of a tiny training run, predicted by the
# real `strand plan`. The CSV has its header and exactly one row per point, efficiency 1 on the
# fewest ranks, every predicted column filled; the PNGs of each kind are written; a second call
# skips every point; collect.sh merges both sweeps; bad settings are refused with one line, exit 2.
set -euo pipefail
source "$STRAND_SOURCE_DIR/tests/cli/cli_common.sh"
cli_begin scaling_script
scripts=$STRAND_SOURCE_DIR/jobs/scaling
command -v gnuplot >/dev/null || { echo "scaling_script: gnuplot (gnuplot-nox) is missing"; exit 1; }
command -v jq >/dev/null || { echo "scaling_script: jq is missing"; exit 1; }
header=series,kind,what,length,tokens_per_rank,channels,strategy,layout,ranks,nodes,ranks_per_node,sp,dp,oversubscribed,time_s,compute_s,comm_s,io_s,bytes_sent,peak_rss_bytes,efficiency,predicted_s,predicted_compute_s,predicted_comm_s,predicted_io_s,predicted_memory_bytes
sweep() { # VAR=VALUE ...: the sweep with the test's launcher
  env STRAND="$STRAND" LAUNCH="$STRAND_MPIEXEC --oversubscribe -n" RANKS="1 2" "$@" bash "$scripts/sweep.sh"
}
strong() { sweep OUT="$work/strong" WHAT=mixer:conv LENGTH=2048 CHANNELS=16 REPEAT=1 CALIBRATE=--quick; }
# check_csv CSV KIND LENGTHS: header, one row per rank count 1 and 2 with these windows, the first
# row's efficiency 1, numbers in every measured time and predicted column.
check_csv() {
  local csv=$1 kind=$2 lengths=$3
  [ "$(head -n 1 "$csv")" = "$header" ] && ok "$kind CSV header" || fail "$kind CSV header: $(head -n 1 "$csv")"
  awk -F, -v kind="$kind" -v lengths="$lengths" '
    NR > 1 { n++; split(lengths, L, " ")
      if ($2 != kind || $9 != n || $4 != L[n] || $15 !~ /^[0-9.e+-]+$/) bad = bad " row " n ": kind/ranks/length/time"
      for (i = 22; i <= 26; i++) if ($i !~ /^[0-9.e+-]+$/) bad = bad " row " n ": column " i " empty"
      if (n == 1 && $21 != 1) bad = bad " row 1: efficiency " $21 }
    END { if (n != 2) bad = bad " " n + 0 " rows"; if (bad != "") { print bad; exit 1 } }' "$csv" >"$work/check.out" &&
    ok "$kind CSV: 2 rows (ranks 1, 2; L $lengths), efficiency 1 first, predictions filled" ||
    { fail "$kind CSV:$(cat "$work/check.out")"; cat "$csv"; }
}
png() { [ -s "$1" ] && [ "$(head -c 4 "$1" | tail -c 3)" = PNG ]; }

# 1. strong: the conv mixer's bench at L = 2048 on 1 and 2 ranks
t0=$SECONDS
if strong >"$work/strong.out" 2>&1; then ok "strong sweep: $(tail -n 1 "$work/strong.out")"; else
  fail "strong sweep"; cat "$work/strong.out"; fi
check_csv "$work/strong/scaling.csv" strong "2048 2048"
for p in strong_time strong_efficiency split; do png "$work/strong/$p.png" && ok "$p.png" || fail "$p.png"; done
[ ! -e "$work/strong/weak_time.png" ] && ok "no weak plot without weak rows" || fail "weak_time.png made"
jq -e '.strand_machine == 1' "$work/strong/machine.json" >/dev/null && ok "calibrated first" || fail "machine.json"

# 2. resume: every point is skipped, runs.jsonl unchanged
cp "$work/strong/runs.jsonl" "$work/first.jsonl"
strong >"$work/again.out" 2>&1 || { fail "second call"; cat "$work/again.out"; }
[ "$(grep -c 'done before, skipped' "$work/again.out")" -eq 2 ] && cmp -s "$work/strong/runs.jsonl" "$work/first.jsonl" &&
  ok "second call skipped both points" || { fail "second call ran again"; cat "$work/again.out"; }

# 3. weak: a two-block conv model, 512 tokens per rank, 3 steps, against the same calibration
cli_prep "$work/lambda.h5"
cli_tiny_ini "$work/tiny.ini" "$work/lambda.h5" </dev/null
if sweep OUT="$work/weak" KIND=weak WHAT="train:$work/tiny.ini" LENGTH=512 STEPS=3 MACHINE="$work/strong/machine.json" \
  >"$work/weak.out" 2>&1; then ok "weak sweep: $(tail -n 1 "$work/weak.out")"; else fail "weak sweep"; cat "$work/weak.out"; fi
check_csv "$work/weak/scaling.csv" weak "512 1024"
awk -F, 'NR > 1 && $5 != 512 { exit 1 }' "$work/weak/scaling.csv" && ok "weak: 512 tokens per rank" || fail "tokens_per_rank"
png "$work/weak/weak_time.png" && ok "weak_time.png" || fail "weak_time.png"
"$scripts/collect.sh" -o "$work/all.csv" "$work/strong/runs.jsonl" "$work/weak/runs.jsonl" &&
  [ "$(wc -l <"$work/all.csv")" -eq 5 ] && ok "collect.sh merges both sweeps: 4 rows" || fail "collect.sh of both"

# 4. refusals: one line naming the setting, exit 2, before anything runs
refuse() { # NEEDLE VAR=VALUE ...
  local needle=$1 rc=0
  shift
  sweep OUT="$work/bad" WHAT=mixer:conv "$@" >"$work/bad.out" 2>&1 || rc=$?
  if [ "$rc" -eq 2 ] && [ "$(wc -l <"$work/bad.out")" -eq 1 ] && grep -q "^scaling: error: .*$needle" "$work/bad.out" &&
    [ ! -e "$work/bad" ]; then
    ok "refused $*: $(cat "$work/bad.out")"
  else
    fail "$*: exit $rc"; cat "$work/bad.out"
  fi
}
refuse KIND KIND=medium
refuse RANKS "RANKS=1 two"
refuse WHAT WHAT=conv
cli_end "scaling_script: passed in $((SECONDS - t0)) s"
