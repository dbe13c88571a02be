#!/usr/bin/env bash
# Write failures in the run directory end the job with one line that gives the reason (strerror
# of the failing call), and leave no temporary file behind:
#   full disk:     run.dir on a full 64 KiB tmpfs (a private mount): config.ini cannot be written
#   config.ini, summary.json, metrics.jsonl (fresh and rewritten on resume): /dev/full in place of
#                  the file (or its .tmp), which fails every write with ENOSPC
set -euo pipefail
: "${STRAND:?}" "${STRAND_SOURCE_DIR:?}" "${STRAND_MPIEXEC:?}"
source "$(dirname "${BASH_SOURCE[0]}")/cli_common.sh"
cli_begin write

cli_prep "$work/lambda.h5"
cli_tiny_ini "$work/tiny.ini" "$work/lambda.h5" <<INI
[train]
seq_len = 128
steps = 6
log_every = 2
eval_windows = 1
INI
train() { # train RUN_DIR [args...]: 2 ranks; sets rc; stderr in RUN_DIR.err
    local dir=$1
    shift
    rc=0
    timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --config "$work/tiny.ini" \
        --set "run.dir=$dir" --quiet "$@" >"$dir.out" 2>"$dir.err" || rc=$?
}
# check NAME ERRFILE PATTERN: exit 1 and exactly one error line, containing PATTERN (fixed string)
check() {
    local name=$1 err=$2 pattern=$3
    if [ "$rc" -ne 1 ]; then
        fail "$name: exit $rc, expected 1"; cat "$err"; return 1
    elif [ "$(grep -c 'strand train: error:' "$err")" -ne 1 ] || ! grep -qF -- "$pattern" "$err"; then
        fail "$name: expected one error line containing '$pattern':"; cat "$err"; return 1
    fi
    return 0
}

# ---- a full file system as run.dir ----
if [ "$(id -u)" -eq 0 ] && unshare -m true 2>/dev/null; then
    full=$work/full
    mkdir -p "$full"
    rc=0
    # The mount lives as long as the namespace, so the listing is taken inside it.
    unshare -m bash -c '
        mount -t tmpfs -o size=64k none "$1" || exit 3
        dd if=/dev/zero of="$1/filler" bs=4k 2>/dev/null || true
        rc=0
        timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --config "$2" --set "run.dir=$1" \
            --quiet >"$3.out" 2>"$3.err" || rc=$?
        ls -A "$1" >"$3.ls"
        exit $rc' sh "$full" "$work/tiny.ini" "$work/fullrun" || rc=$?
    if check "full disk" "$work/fullrun.err" "cannot write $full/config.ini: No space left on device"; then
        if grep -q 'config.ini' "$work/fullrun.ls"; then
            fail "full disk: left behind: $(tr '\n' ' ' <"$work/fullrun.ls")"
        else
            ok "full disk: $(grep error: "$work/fullrun.err"); nothing left behind"
        fi
    fi
else
    echo "skip full disk: needs root and unshare -m for a private tmpfs"
fi

# ---- config.ini.tmp on /dev/full ----
run=$work/config
mkdir -p "$run"
ln -s /dev/full "$run/config.ini.tmp"
train "$run"
if check "config.ini" "$run.err" "cannot write $run/config.ini: No space left on device"; then
    if [ -e "$run/config.ini.tmp" ] || [ -L "$run/config.ini.tmp" ] || [ -e "$run/config.ini" ]; then
        fail "config.ini: the temporary file was left, or config.ini written: $(ls -A "$run")"
    else
        ok "config.ini: $(grep error: "$run.err"); config.ini.tmp removed"
    fi
fi

# ---- metrics.jsonl on /dev/full, fresh run ----
run=$work/metrics
mkdir -p "$run"
ln -s /dev/full "$run/metrics.jsonl"
train "$run"
if check "metrics.jsonl" "$run.err" "cannot write $run/metrics.jsonl: No space left on device"; then
    if [ -e "$run/summary.json" ]; then fail "metrics.jsonl: summary.json written after a failed metrics write"
    else ok "metrics.jsonl: $(grep error: "$run.err")"; fi
fi

# ---- metrics.jsonl rewritten on resume: its .tmp on /dev/full ----
run=$work/rewrite
STRAND_FAULT_PREEMPT_STEP=3 train "$run"
if [ "$rc" -ne 75 ]; then
    fail "rewrite: the preempted run exited $rc, expected 75"; cat "$run.err"
else
    ln -s /dev/full "$run/metrics.jsonl.tmp"
    train "$run"
    if check "rewrite" "$run.err" "cannot write $run/metrics.jsonl: No space left on device"; then
        if [ -e "$run/metrics.jsonl.tmp" ] || [ -L "$run/metrics.jsonl.tmp" ]; then
            fail "rewrite: metrics.jsonl.tmp was left behind"
        elif [ "$(wc -l <"$run/metrics.jsonl")" -ne 3 ]; then
            fail "rewrite: metrics.jsonl lost its 3 lines"
        else
            ok "rewrite: $(grep error: "$run.err"); metrics.jsonl kept, .tmp removed"
        fi
    fi
fi

# ---- summary.json.tmp on /dev/full: the run trains, then the summary fails ----
run=$work/summary
mkdir -p "$run"
ln -s /dev/full "$run/summary.json.tmp"
train "$run"
if check "summary.json" "$run.err" "cannot write $run/summary.json: No space left on device"; then
    if [ -e "$run/summary.json.tmp" ] || [ -L "$run/summary.json.tmp" ] || [ -e "$run/summary.json" ]; then
        fail "summary.json: left behind: $(ls -A "$run")"
    else
        ok "summary.json: $(grep error: "$run.err")"
    fi
fi

cli_end "all write-error cases behaved"
