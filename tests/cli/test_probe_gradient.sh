#!/usr/bin/env bash
# strand probe gradient on a tiny trained checkpoint: the CSV has one row per k = 0 .. T with
# finite norms, 2 ranks give the curve of 1, --plot writes a non-empty PNG (gnuplot-nox), and bad
# requests are refused with one error line.
set -euo pipefail
source "$STRAND_SOURCE_DIR/tests/cli/cli_common.sh"
cli_begin probe_gradient
cd "$work"
mpi() { "$STRAND_MPIEXEC" --oversubscribe -n "$@"; }
if [ "${STRAND_REAL:-}" = double ]; then same=1e-10; else same=1e-5; fi
cli_prep l.h5
mpi 2 "$STRAND" train --quiet --set data.path=l.h5 --set run.dir=run --set train.steps=3 \
    --set train.seq_len=64 --set model.d_model=16 --set model.mlp_hidden=32 --set train.eval_windows=0 \
    --set model.layers=conv,rnn >/dev/null

# 1. the CSV: k = 0 .. 63 (T = the last position), finite non-negative norms, min <= mean <= max
mpi 2 "$STRAND" probe gradient --checkpoint run --windows 3 --csv g.csv >out.txt
cat out.txt
[ "$(head -1 g.csv)" = "k,mean_norm,std,min,max" ] && ok "CSV header" || fail "CSV header: $(head -1 g.csv)"
awk -F, 'NR > 1 { if ($1 != NR - 2 || $2 < 0 || $4 > $2 * (1 + 1e-12) || $2 > $5 * (1 + 1e-12) || $2 != $2) bad++; rows++ }
    END { exit !(rows == 64 && bad == 0) }' g.csv && ok "CSV: 64 rows k = 0 .. 63" ||
    fail "CSV rows: $(wc -l <g.csv) lines: $(head -5 g.csv | tr '\n' ' ')"
grep -q "^windows: 3 .* windows of 64 tokens" out.txt && ok "3 windows averaged" || fail "windows: $(cat out.txt)"
grep -q "per step r = .*per decade slope s = " out.txt && ok "both fits printed" || fail "fits: $(cat out.txt)"

# 2. one rank and three equal two
"$STRAND" probe gradient --quiet --checkpoint run --windows 3 --position 40 --csv g1.csv
for n in 2 3; do
    mpi $n "$STRAND" probe gradient --quiet --checkpoint run --windows 3 --position 40 --csv g$n.csv
    paste -d, g1.csv g$n.csv | awk -F, -v tol="$same" 'NR > 1 { d = $2 - $7; if (d < 0) d = -d; if (d > w) w = d
        if ($2 > m) m = $2; rows++ } END { exit !(rows == 41 && w <= tol * m) }' &&
        ok "SP = $n equals SP = 1 (T = 40)" || fail "SP = $n differs from SP = 1"
done

# 3. the plot
if command -v gnuplot >/dev/null 2>&1; then
    mpi 2 "$STRAND" probe gradient --quiet --checkpoint run --windows 2 --plot g.png
    [ -s g.png ] && [ "$(head -c 4 g.png | tail -c 3)" = PNG ] && ok "--plot wrote a PNG" || fail "g.png missing or not a PNG"
    [ ! -e g.png.data.csv ] && ok "no temporary CSV left" || fail "g.png.data.csv left behind"
else
    echo "SKIP: gnuplot is not installed (Debian package gnuplot-nox; jobs/setup.sh installs it): no PNG check"
fi

# 4. refusals: one error line each
refused() { # CODE NEEDLE ARGS...
    local code=$1 needle=$2 rc=0
    shift 2
    mpi 2 "$STRAND" probe gradient "$@" >/dev/null 2>err.txt || rc=$?
    if [ "$rc" -eq "$code" ] && [ "$(grep -c '^strand' err.txt)" -eq 1 ] &&
        grep -q -- "^strand probe gradient: error: .*$needle" err.txt; then
        ok "refused ($code): $needle"
    else
        fail "expected exit $code with '$needle', got $rc: $(cat err.txt)"
    fi
}
refused 1 "past the window's last position 63" --checkpoint run --position 64
refused 2 "is required" --windows 2
refused 2 "windows needs a whole number >= 1" --checkpoint run --windows 0
refused 2 "unknown option '--span'" --checkpoint run --span 3
"$STRAND" probe gradient --help | grep -q -- "--plot FILE.png" && ok "--help" || fail "--help"
cli_end "probe gradient ok"
