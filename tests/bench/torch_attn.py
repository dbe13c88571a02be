#!/usr/bin/python3
"""PyTorch reference for `strand bench ring`: the same causal (optionally sliding-window) GQA
attention, forward + backward, at the same sizes, written out explicitly (torch 1.13 has no
scaled_dot_product_attention). Prints one JSON line.

    OPENBLAS_NUM_THREADS=1 python3 tests/bench/torch_attn.py --length 16384 --heads 1 --head-dim 64 \
        --threads 1

GFLOP/s count the causal FLOPs as strand does (4 L^2 h e / 2 forward for QK^T and PV, 2.5x that
backward), although this dense form computes and masks the whole L x L score matrix (twice the
arithmetic). Heads run one at a time so that one L x L score matrix (and its softmax and gradient)
exists at once: about 4 L^2 * 4 bytes (4 GiB at L = 16384, float32).
"""
import argparse
import json
import math
import statistics
import time

import torch


def visible_pairs(length, window):
    if window <= 0 or window >= length:
        return length * (length + 1) / 2
    # rows i < window see i + 1 keys, the rest see window keys
    return window * (window + 1) / 2 + (length - window) * window


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--length", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--head-dim", type=int, required=True)
    ap.add_argument("--kv-heads", type=int, default=0)
    ap.add_argument("--window", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (match the MPI ranks x BLAS threads)")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    L, H, E = a.length, a.heads, a.head_dim
    G = a.kv_heads or H
    if H % G:
        raise SystemExit("--kv-heads must divide --heads")
    gen = torch.Generator().manual_seed(2024)
    q = (torch.rand(H, L, E, generator=gen, dtype=dtype) * 2 - 1).requires_grad_()
    k = (torch.rand(G, L, E, generator=gen, dtype=dtype) * 2 - 1).requires_grad_()
    v = (torch.rand(G, L, E, generator=gen, dtype=dtype) * 2 - 1).requires_grad_()
    dout = torch.rand(H, L, E, generator=gen, dtype=dtype) * 2 - 1
    # masked[i, j] = key j invisible to query i
    idx = torch.arange(L)
    masked = idx[None, :] > idx[:, None]
    if a.window > 0:
        masked |= idx[None, :] <= idx[:, None] - a.window
    scale = 1.0 / math.sqrt(E)

    def head_forward(h):
        g = h // (H // G)
        s = (q[h] @ k[g].transpose(0, 1)) * scale  # (L, L)
        s = s.masked_fill(masked, float("-inf"))
        p = torch.softmax(s, dim=-1)
        return p @ v[g]  # (L, E)

    fwd_bwd, fwd, bwd = [], [], []
    for it in range(a.repeat + 1):  # the first is a warm-up
        for t in (q, k, v):
            t.grad = None
        t_f = t_b = 0.0
        for h in range(H):
            t0 = time.perf_counter()
            out = head_forward(h)
            t1 = time.perf_counter()
            out.backward(dout[h])
            t2 = time.perf_counter()
            t_f += t1 - t0
            t_b += t2 - t1
            del out
        if it > 0:
            fwd.append(t_f)
            bwd.append(t_b)
            fwd_bwd.append(t_f + t_b)

    # The same-precision GEMM in the same run, for reference (square n = 2048, best of 3).
    n = 2048
    x = torch.rand(n, n, generator=gen, dtype=dtype)
    y = torch.rand(n, n, generator=gen, dtype=dtype)
    best = 0.0
    for _ in range(4):
        t0 = time.perf_counter()
        torch.mm(x, y)
        best = max(best, 2.0 * n**3 / (time.perf_counter() - t0) / 1e9)

    flops = 3.5 * 4.0 * visible_pairs(L, a.window) * H * E
    t = statistics.median(fwd_bwd)
    print(json.dumps({
        "bench": "attn_torch",
        "torch": torch.__version__,
        "precision": "float" if dtype == torch.float32 else "double",
        "threads": a.threads,
        "length": L,
        "heads": H,
        "kv_heads": G,
        "head_dim": E,
        "window": a.window,
        "repeat": a.repeat,
        "fwd_bwd_s": round(t, 6),
        "fwd_s": round(statistics.median(fwd), 6),
        "bwd_s": round(statistics.median(bwd), 6),
        "gflop": round(flops / 1e9, 4),
        "gflops": round(flops / t / 1e9, 3),
        "gemm_gflops": round(best, 3),
        "efficiency_vs_gemm": round(flops / t / 1e9 / best, 4),
    }))


if __name__ == "__main__":
    main()
