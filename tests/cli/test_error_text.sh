#!/usr/bin/env bash
# Every error is one line on stderr, whatever the text it quotes, and config files are read whole:
#   control characters: a --set value with a newline, a tab and a CR is quoted escaped (\n, \t, \r)
#   NUL byte:           a config line "d_model = 16<NUL> 99" is refused with file and line (libinih
#                       alone would stop at the NUL and read 16)
#   ordered pairs:      hyena.decay_fast > hyena.decay_slow and s4d.dt_min > s4d.dt_max are refused
#                       with both values, whatever the model's mixers
set -euo pipefail
: "${STRAND:?}"
source "$(dirname "${BASH_SOURCE[0]}")/cli_common.sh"
cli_begin errtext

# one NAME PATTERN ARGS...: strand train --dry-run (one process, so that stderr holds strand's
# output only, not mpirun's) exits 1 and stderr is exactly one line, the error, containing
# PATTERN (a fixed string)
one() {
    local name=$1 pattern=$2
    shift 2
    local rc=0
    timeout 60 "$STRAND" train --dry-run "$@" >"$work/$name.out" \
        2>"$work/$name.err" || rc=$?
    if [ "$rc" -ne 1 ]; then
        fail "$name: exit $rc, expected 1"; cat "$work/$name.err"
    elif [ "$(wc -l <"$work/$name.err")" -ne 1 ] || ! grep -q '^strand train: error: ' "$work/$name.err"; then
        fail "$name: stderr is not one error line:"; cat -A "$work/$name.err"
    elif ! grep -qF -- "$pattern" "$work/$name.err"; then
        fail "$name: message lacks '$pattern':"; cat "$work/$name.err"
    else
        ok "$name: $(cat "$work/$name.err")"
    fi
}

one newline 'run.dir = runs/a\nb\tc\rd: contains a control character' --set "$(printf 'run.dir=runs/a\nb\tc\rd')"
one unknown_key_newline "unknown config key 'train.l\nr'" --set "$(printf 'train.l\nr=1')"

printf '[model]\nd_model = 16\0 99\n' >"$work/nul.ini"
one nul "$work/nul.ini:2: contains a NUL byte (column 13)" --config "$work/nul.ini"
# A file of zeros is refused at its first byte (libinih alone reads it as one empty line).
head -c 100000 /dev/zero >"$work/zeros.ini"
one zeros "$work/zeros.ini:1: contains a NUL byte (column 1)" --config "$work/zeros.ini"

one decay "hyena.decay_fast = 2 must not exceed hyena.decay_slow = 1.5" --set hyena.decay_fast=2
one dt "s4d.dt_min = 0.5 must not exceed s4d.dt_max = 0.1" --set s4d.dt_min=0.5

cli_end "all error-text cases behaved"
