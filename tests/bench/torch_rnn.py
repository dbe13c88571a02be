#!/usr/bin/python3
"""PyTorch reference for `strand bench mixer --layer rnn|lstm|gru`: torch.nn.RNN / LSTM / GRU with
the hidden width equal to the input width, plus the output projection strand's mixers include,
forward and backward over one sequence of L positions on CPU with a fixed thread count. Prints one
JSON line with forward_s, backward_s, fwd_bwd_s and gflops counted as strand counts them (input
projection, recurrence and output projection, backward as twice the forward).

usage: /usr/bin/python3 tests/bench/torch_rnn.py --cell lstm --length L --channels C [--threads N]
           [--repeat R] [--dtype float32|float64]
Use Debian's /usr/bin/python3 (python3-torch); another python3 first on PATH may not see torch.
"""
import argparse
import json
import statistics
import time

import torch

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell", choices=sorted(GATES), required=True)
    p.add_argument("--length", type=int, required=True)
    p.add_argument("--channels", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, a.dtype)
    L, C = a.length, a.channels
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[a.cell]
    rnn = cls(C, C, batch_first=True, dtype=dtype)
    out_proj = torch.nn.Linear(C, C, bias=False, dtype=dtype)
    x = torch.randn(1, L, C, dtype=dtype, requires_grad=True)
    dy = torch.randn(1, L, C, dtype=dtype)
    times = {"forward": [], "backward": [], "both": []}
    for r in range(a.repeat + 1):  # the first run warms up
        t0 = time.perf_counter()
        y = out_proj(rnn(x)[0])
        t1 = time.perf_counter()
        y.backward(dy)
        t2 = time.perf_counter()
        if r > 0:
            times["forward"].append(t1 - t0)
            times["backward"].append(t2 - t1)
            times["both"].append(t2 - t0)
        x.grad = None
        rnn.zero_grad()
        out_proj.zero_grad()
    both = statistics.median(times["both"])
    flops = 3 * 2.0 * L * C * C * (2 * GATES[a.cell] + 1)
    print(json.dumps({
        "bench": "torch_rnn", "cell": a.cell, "length": L, "channels": C, "threads": a.threads,
        "dtype": a.dtype, "torch": torch.__version__,
        "forward_s": statistics.median(times["forward"]), "backward_s": statistics.median(times["backward"]),
        "fwd_bwd_s": both, "gflops": flops / both / 1e9,
    }))


if __name__ == "__main__":
    main()
