#!/usr/bin/env bash
# strand prep --task: each synthetic task's dataset is what its definition says, read back from
# the file (h5dump, from Debian's hdf5-tools) and checked position by position:
#   parity  every counted target is 2 + (x_i XOR x_(i-D)), at the input x_i
#   adding  the two marked digits are D apart and the counted targets are their sum's digits
#   copy    the counted targets, after the cue, are the block of K = 8 symbols again
#   recall  the counted target is the value stored with the queried key
# then strand info names the task tokenizer and a model trains on it at 2 ranks and reports its
# accuracy on the answer positions (metrics.jsonl and strand eval), and a distance that does not
# fit is refused with one error line.
set -euo pipefail
: "${STRAND:?}" "${STRAND_MPIEXEC:?}"
work=$(mktemp -d /tmp/strand_tasks.XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
command -v h5dump >/dev/null || { echo "test_tasks_cli: h5dump (hdf5-tools) is missing"; exit 1; }

L=64 D=20
for task in parity adding copy recall; do
    "$STRAND" prep --task $task --length $L --distance $D --count 24 --seed 5 --val-fraction 0.25 \
        --out "$work/$task.h5" >"$work/$task.prep" 2>&1 || { fail "$task: prep"; cat "$work/$task.prep"; continue; }
    "$STRAND" info "$work/$task.h5" >"$work/$task.info" 2>&1 || fail "$task: info"
    grep -q "tokenizer: task:$task version 1" "$work/$task.info" || { fail "$task: info lacks the tokenizer"; cat "$work/$task.info"; }
    h5dump -d /tokens -y -w 0 "$work/$task.h5" >"$work/$task.tokens"
    h5dump -d /loss_mask -y -w 0 "$work/$task.h5" >"$work/$task.mask"
    if /usr/bin/python3 - "$task" "$L" "$D" "$work/$task.tokens" "$work/$task.mask" <<'PY'; then
import re, sys
task, L, D = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def values(path):
    text = open(path).read()
    return [int(v) for v in re.findall(r"-?\d+", text[text.index("DATA {"):])]
tokens, mask = values(sys.argv[4]), values(sys.argv[5])
assert len(tokens) == len(mask) and len(tokens) % L == 0, (len(tokens), len(mask))
bad, counted = [], 0
for r in range(len(tokens) // L):
    t, m = tokens[r * L:(r + 1) * L], mask[r * L:(r + 1) * L]
    answers = [i for i in range(L) if m[i]]
    counted += len(answers)
    if m[L - 1]:
        bad.append((r, "last position counted"))
    if task == "parity":  # x_0 y_0 x_1 y_1 ...: the target of x_j (position 2j) is y_j
        want = [2 * j for j in range(D, L // 2)]
        if answers != want:
            bad.append((r, "mask", answers[:4]))
        for i in answers:
            if t[i + 1] != 2 + (t[i] ^ t[i - 2 * D]):
                bad.append((r, i))
    elif task == "adding":  # marked digits 10-19, query 20; the answer is two digits
        marks = [i for i in range(L) if 10 <= t[i] <= 19]
        total = sum(t[i] - 10 for i in marks)
        if len(marks) != 2 or marks[1] - marks[0] != D:
            bad.append((r, "marks", marks))
        if len(answers) != 2 or t[answers[0]] != 20:
            bad.append((r, "answers", answers))
        elif 10 * t[answers[0] + 1] + t[answers[1] + 1] != total:
            bad.append((r, "sum", total, t[answers[0] + 1], t[answers[1] + 1]))
    elif task == "copy":  # the block [0, 8), then after the cue the block again
        if len(answers) != 8 or [t[i + 1] for i in answers] != t[0:8]:
            bad.append((r, "copy", answers))
        if answers and answers[0] + 1 - 8 != D:
            bad.append((r, "distance", answers[0]))
    elif task == "recall":  # 8 (key, value) pairs, then query, key: the target is its value
        pairs = dict((t[2 * k], t[2 * k + 1]) for k in range(8))
        if len(answers) != 1 or pairs.get(t[answers[0]]) != t[answers[0] + 1]:
            bad.append((r, "recall", answers))
if bad or counted == 0:
    print(task, "bad:", bad[:5], "counted:", counted)
    sys.exit(1)
print(f"ok   {task}: {len(tokens) // L} examples, {counted} answer positions as defined")
PY
        :
    else
        fail "$task: contents"
    fi
done

# A model trains on a task at 2 ranks and reports the accuracy on the answer positions.
cat >"$work/parity.ini" <<INI
[model]
d_model = 16
layers = conv,conv
[train]
seq_len = $L
steps = 4
log_every = 1
eval_windows = 2
[data]
path = $work/parity.h5
[run]
dir = $work/run
INI
if timeout 300 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --config "$work/parity.ini" \
    >"$work/train.out" 2>&1; then
    grep -q '"answer_accuracy"' "$work/run/metrics.jsonl" || fail "train: metrics.jsonl has no answer_accuracy"
    ckpt=$(ls "$work"/run/checkpoints/*.h5 | tail -1)
    timeout 300 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" eval --checkpoint "$ckpt" --data "$work/parity.h5" \
        >"$work/eval.out" 2>&1 || fail "eval"
    grep -q "answer_accuracy" "$work/eval.out" || { fail "eval prints no answer_accuracy"; cat "$work/eval.out"; }
    echo "ok   train and eval on parity report answer accuracy"
else
    fail "train on parity"; cat "$work/train.out"
fi

# A distance that does not fit is refused with one error line.
rc=0
"$STRAND" prep --task copy --length 20 --distance 10 --count 4 --out "$work/x.h5" 2>"$work/x.err" || rc=$?
if [ "$rc" -eq 0 ] || [ "$(wc -l <"$work/x.err")" -ne 1 ] || ! grep -q "does not fit" "$work/x.err"; then
    fail "copy with a distance that does not fit: exit $rc"; cat "$work/x.err"
else
    echo "ok   refused: $(cat "$work/x.err")"
fi

[ "$failures" -eq 0 ] || { echo "test_tasks_cli: $failures failures"; exit 1; }
echo "test_tasks_cli: all task datasets as defined"
