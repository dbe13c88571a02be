#!/usr/bin/env bash
# jobs/experiments/long_range.sh on a small slice (two mixers, two tasks, one distance, a tiny
# budget): one CSV row per run with an accuracy in [0, 1], the Markdown table, both PNGs
# non-empty, the probe's fits; a second call reuses every finished run (resume after a kill);
# bad settings are refused with one line.
set -euo pipefail
source "$STRAND_SOURCE_DIR/tests/cli/cli_common.sh"
cli_begin long_range_script
script=$STRAND_SOURCE_DIR/jobs/experiments/long_range.sh
command -v gnuplot >/dev/null || { echo "long_range_script: gnuplot (gnuplot-nox) is missing"; exit 1; }
slice() {
    STRAND=$STRAND OUT=$work/out MIXERS="conv dilated" TASKS="copy parity" DISTANCES=16 TOKENS=2048 \
        MIN_STEPS=2 MAX_STEPS=4 LAUNCH="$STRAND_MPIEXEC --oversubscribe -n 2" bash "$script" "$@"
}
if slice >"$work/first.out" 2>&1; then
    ok "the slice ran: $(tail -1 "$work/first.out")"
else
    fail "the slice failed"; cat "$work/first.out"
fi
csv=$work/out/long_range.csv
awk -F, 'NR == 1 { ok_header = ($1 == "task" && $9 == "answer_accuracy") }
    NR > 1 { rows++; if (!($9 >= 0 && $9 <= 1) || $13 != 2) bad++ }
    END { exit !(ok_header && rows == 4 && bad == 0) }' "$csv" && ok "CSV: 4 runs, accuracies in [0, 1], 2 ranks" ||
    { fail "CSV"; cat "$csv"; }
[ "$(grep -c '^| conv |\|^| dilated |' "$work/out/long_range.md")" -eq 2 ] && ok "table: a row per mixer" ||
    { fail "table"; cat "$work/out/long_range.md"; }
for png in long_range.png gradient.png; do
    [ -s "$work/out/$png" ] && [ "$(head -c 4 "$work/out/$png" | tail -c 3)" = PNG ] && ok "$png written" || fail "$png"
done
[ "$(awk -F, 'NR > 1 && $8 ~ /^[0-9.]+$/' "$work/out/gradient.csv" | wc -l)" -eq 2 ] && ok "gradient.csv: fits for both" ||
    { fail "gradient.csv"; cat "$work/out/gradient.csv"; }
# Resume: the runs are kept, so nothing trains again and the CSV is the same.
cp "$csv" "$work/first.csv"
touch "$work/marker"
slice >"$work/second.out" 2>&1 || fail "second call"
[ -z "$(find "$work/out/runs" -name 'ckpt-*.h5' -newer "$work/marker")" ] && ok "second call reused every run" ||
    fail "second call trained again"
cmp -s "$csv" "$work/first.csv" && ok "same CSV" || fail "CSV changed on resume"
# Refusals: one line each naming the setting, non-zero exit.
refuse() { # WHAT VAR=VALUE ...: the script with the slice's settings and these instead
    local what=$1 rc=0
    shift
    env STRAND="$STRAND" OUT="$work/bad" MIXERS=conv TASKS=copy DISTANCES=16 "$@" bash "$script" >"$work/bad.out" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ] && [ "$(wc -l <"$work/bad.out")" -eq 1 ] && grep -q "^long_range: error: .*$what" "$work/bad.out"; then
        ok "refused $*: $(cat "$work/bad.out")"
    else
        fail "$*: exit $rc"; cat "$work/bad.out"
    fi
}
refuse TOKENS TOKENS=0
refuse DISTANCES DISTANCES=1x
refuse nope TASKS=nope
refuse "$work/none" STRAND="$work/none"
cli_end "long_range_script: passed"
