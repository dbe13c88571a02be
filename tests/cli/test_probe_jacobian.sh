#!/usr/bin/env bash
# strand probe jacobian on tiny trained checkpoints: ornn with phi = identity keeps every singular
# value of the span Jacobian at 1; the singular values at 2 and 3 ranks (uneven shards, the span
# across ranks) equal one rank's; bad requests are refused with one error line.
set -euo pipefail
source "$STRAND_SOURCE_DIR/tests/cli/cli_common.sh"
cli_begin probe_jacobian
cd "$work"
mpi() { "$STRAND_MPIEXEC" --oversubscribe -n "$@"; }
if [ "${STRAND_REAL:-}" = double ]; then one=1e-6 same=1e-10; else one=1e-4 same=1e-5; fi
cli_prep l.h5
train() { # DIR LAYERS [--set ...]
    local dir=$1 layers=$2
    shift 2
    mpi 2 "$STRAND" train --quiet --set data.path=l.h5 --set run.dir="$dir" --set train.steps=5 \
        --set train.seq_len=130 --set model.d_model=16 --set model.mlp_hidden=32 --set train.eval_windows=0 \
        --set model.layers="$layers" "$@" >/dev/null
}
train ornn ornn,conv --set ornn.activation=identity
train gated conv,lstm,gru
train plain rnn --set rnn.activation=tanh

# 1. ornn, phi = identity: a product of orthogonal matrices
mpi 2 "$STRAND" probe jacobian --checkpoint ornn --block 0 --position 3 --span 120 --csv o.csv >out.txt
cat out.txt
awk -F, -v tol="$one" 'NR > 1 { d = $2 - 1; if (d < 0) d = -d; if (d > w) w = d; n++ }
    END { exit !(n == 16 && w <= tol) }' o.csv && ok "ornn identity: 16 singular values at 1 (tol $one)" ||
    fail "ornn identity singular values: $(cat o.csv | tr '\n' ' ')"
grep -q "predicted 1.000000" out.txt && ok "ornn predicted decay 1" || fail "ornn predicted decay: $(cat out.txt)"

# 2. one rank against 2 and 3 (130 positions: shards of 65 / 44, 43, 43), every recurrent block
same_as_one() { # NAME ARGS...
    local name=$1
    shift
    "$STRAND" probe jacobian --quiet "$@" --csv "$name.1.csv"
    for n in 2 3; do
        mpi $n "$STRAND" probe jacobian --quiet "$@" --csv "$name.$n.csv"
        paste -d, "$name.1.csv" "$name.$n.csv" | awk -F, -v tol="$same" 'NR == 2 { m = $2 }
            NR > 1 { d = $2 - $4; if (d < 0) d = -d; if (d > w) w = d; rows++ }
            END { exit !(rows > 0 && w <= tol * m) }' && ok "$name: SP = $n equals SP = 1" ||
            fail "$name: SP = $n differs from SP = 1"
    done
}
same_as_one lstm --checkpoint gated --block 1 --position 20 --span 90
same_as_one lstm_cell --checkpoint gated --block 1 --position 20 --span 90 --lstm-path cell
same_as_one gru --checkpoint gated --block 2 --position 50 --span 40
same_as_one rnn --checkpoint plain --block 0 --position 0 --span 129
same_as_one rnn_zigzag --checkpoint plain --block 0 --position 10 --span 100 --set parallel.layout=zigzag
same_as_one tokens --checkpoint plain --block 0 --position 1 --span 5 --tokens ACGTTGCANNAC
[ "$(wc -l <lstm.1.csv)" -eq 33 ] && ok "lstm full: 2C = 32 singular values" || fail "lstm.1.csv: $(wc -l <lstm.1.csv) lines"
[ "$(wc -l <lstm_cell.1.csv)" -eq 17 ] && ok "lstm cell path: C = 16" || fail "lstm_cell.1.csv: $(wc -l <lstm_cell.1.csv) lines"

# 3. refusals: one error line each
refused() { # CODE NEEDLE ARGS...
    local code=$1 needle=$2 rc=0
    shift 2
    mpi 2 "$STRAND" probe jacobian "$@" >/dev/null 2>err.txt || rc=$?
    # mpirun adds its own lines about the exit status: count strand's
    if [ "$rc" -eq "$code" ] && [ "$(grep -c '^strand' err.txt)" -eq 1 ] &&
        grep -q -- "^strand probe jacobian: error: .*$needle" err.txt; then
        ok "refused ($code): $needle"
    else
        fail "expected exit $code with '$needle', got $rc: $(cat err.txt)"
    fi
}
refused 1 "the model has 3 blocks (0 to 2)" --checkpoint gated --block 3 --span 4
refused 1 "is a conv block" --checkpoint gated --block 0 --span 4
refused 1 "past the window's last position 129" --checkpoint plain --block 0 --position 100 --span 30
refused 1 "lstm blocks only" --checkpoint gated --block 2 --span 4 --lstm-path cell
refused 1 "character 3 is 'U'" --checkpoint plain --block 0 --span 1 --tokens ACUG
refused 2 "are required" --checkpoint plain --block 0
refused 2 "span needs a whole number >= 1" --checkpoint plain --block 0 --span 0
refused 2 "full or cell" --checkpoint gated --block 1 --span 3 --lstm-path both
"$STRAND" probe jacobian --help | grep -q -- "--lstm-path full" && ok "--help" || fail "--help"
"$STRAND" --help | grep -q "probe" && ok "listed in strand --help" || fail "strand --help lacks probe"
cli_end "probe jacobian ok"
