#!/usr/bin/python3
"""PyTorch reference for `strand bench scan --layer mamba`: the Mamba-1 block (in_proj to (x, z),
causal depthwise conv, SiLU, x_proj to (dt, B, C) with a low-rank dt_proj and softplus, the
selective scan with A = -exp(A_log), D skip, gating by SiLU(z), out_proj) at strand's defaults
(expand 2, d_state 16, dt_rank ceil(d_model / 16), conv kernel 4), forward and backward over one
sequence of L positions on CPU with a fixed thread count. The scan is either
  loop     the reference sequential recurrence (one step per position, as selective_scan_ref), or
  chunked  chunks of Q positions in log space: within a chunk h_t = sum_{s<=t} exp(S_t - S_s) b_s
           from the cumulative log decay S (one masked Q x Q product per chunk, state and channel),
           then one sequential pass over the chunk boundaries; the sequence is split once.
--block K evaluates the chunked form K chunks at a time and recomputes each block's Q x Q products
in backward (torch.utils.checkpoint), so its temporaries stay bounded; without it the whole
sequence at once keeps about L * Q * D * N * 4 bytes for backward and needs two or three times that
at its peak (more than 24 GB at L = 2^16, D = 128, N = 16). --segment S runs the chunked scan
over S positions at a time, the state handed on, each segment recomputed in backward (bounded
memory at any L). Prints one JSON line with forward_s,
backward_s, fwd_bwd_s and the peak resident memory.

usage: /usr/bin/python3 tests/bench/torch_mamba.py --length L --channels C [--state N]
           [--scan loop|chunked] [--chunk Q] [--block K] [--segment S] [--threads N] [--repeat R]
           [--warmup W]
           [--dtype float32|float64]
Use Debian's /usr/bin/python3 (python3-torch); another python3 first on PATH may not see torch.
"""
import argparse
import json
import math
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def scan_loop(x, dt, A, B, C):
    """x, dt (L, D); A (D, N); B, C (L, N) -> y (L, D)."""
    L, D = x.shape
    h = torch.zeros(D, A.shape[1], dtype=x.dtype)
    ys = []
    for t in range(L):
        h = torch.exp(dt[t, :, None] * A) * h + (dt[t] * x[t])[:, None] * B[t][None, :]
        ys.append(h @ C[t])
    return torch.stack(ys)


def scan_chunked(x, dt, A, B, C, Q, block, h0=None):
    """-> y (L, D) and the final state (D, N); h0 (D, N) enters at the first position."""
    L, D = x.shape
    N = A.shape[1]
    nc = (L + Q - 1) // Q
    pad = nc * Q - L
    if pad:
        x, dt = F.pad(x, (0, 0, 0, pad)), F.pad(dt, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))
    log_a = (dt[:, :, None] * A[None]).view(nc, Q, D, N)
    b = ((dt * x)[:, :, None] * B[:, None, :]).view(nc, Q, D, N)
    S = log_a.cumsum(1)
    mask = torch.tril(torch.ones(Q, Q, dtype=torch.bool))[None, :, :, None, None]

    def local(s, bb):  # s, bb (k, Q, D, N) -> h from a zero state at each chunk's start
        diff = (s[:, :, None] - s[:, None, :]).masked_fill(~mask, -math.inf)  # (k, t, s, D, N)
        return (torch.exp(diff) * bb[:, None]).sum(2)

    if block:
        h_local = torch.cat([checkpoint(local, S[c0 : c0 + block], b[c0 : c0 + block], use_reentrant=False)
                             for c0 in range(0, nc, block)])
    else:
        h_local = local(S, b)
    # Split once: indexing h_local[c] in the loop would make backward build a zero tensor of the
    # whole h_local for every chunk (quadratic in L); unbind's backward stacks the pieces once.
    h_locals, decays = h_local.unbind(0), torch.exp(S).unbind(0)
    h_prev = torch.zeros(D, N, dtype=x.dtype) if h0 is None else h0
    hs = []
    for c in range(nc):
        h = h_locals[c] + decays[c] * h_prev
        hs.append(h)
        h_prev = h[-1]
    h = torch.stack(hs).view(nc * Q, D, N)[:L]
    return (h * C[:L, None, :]).sum(-1), h[-1]


def scan_segmented(x, dt, A, B, C, Q, block, segment):
    """The chunked scan over segments of `segment` positions in turn, the state handed from one to
    the next, each segment recomputed in backward: what is kept for backward is then O(L D) instead
    of O(L D N), which is what lets the reference run at L = 2^18 in 24 GB."""
    ys, h = [], None
    for s0 in range(0, x.shape[0], segment):
        part = [v[s0 : s0 + segment] for v in (x, dt, B, C)]
        run = lambda x_, dt_, B_, C_, *h_: scan_chunked(x_, dt_, A, B_, C_, Q, block, h_[0] if h_ else None)
        y, h = checkpoint(run, *part, *([h] if h is not None else []), use_reentrant=False)
        ys.append(y)
    return torch.cat(ys)


class Mamba(torch.nn.Module):
    def __init__(self, C, N, dtype, expand=2, kernel=4):
        super().__init__()
        D, R = expand * C, math.ceil(C / 16)
        self.D, self.N, self.R, self.K = D, N, R, kernel
        self.in_proj = torch.nn.Linear(C, 2 * D, bias=False, dtype=dtype)
        self.conv = torch.nn.Conv1d(D, D, kernel, groups=D, padding=kernel - 1, dtype=dtype)
        self.x_proj = torch.nn.Linear(D, R + 2 * N, bias=False, dtype=dtype)
        self.dt_proj = torch.nn.Linear(R, D, dtype=dtype)
        self.A_log = torch.nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=dtype)).repeat(D, 1))
        self.Dskip = torch.nn.Parameter(torch.ones(D, dtype=dtype))
        self.out_proj = torch.nn.Linear(D, C, bias=False, dtype=dtype)

    def forward(self, u, scan, Q, block, segment):
        L = u.shape[0]
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = F.silu(self.conv(x.t()[None])[0, :, :L].t())
        dt_raw, B, C = self.x_proj(x).split([self.R, self.N, self.N], dim=-1)
        dt = F.softplus(self.dt_proj(dt_raw))
        A = -torch.exp(self.A_log)
        if scan == "loop":
            y = scan_loop(x, dt, A, B, C)
        elif segment:
            y = scan_segmented(x, dt, A, B, C, Q, block, segment)
        else:
            y = scan_chunked(x, dt, A, B, C, Q, block)[0]
        return self.out_proj((y + self.Dskip * x) * F.silu(z))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--length", type=int, required=True)
    p.add_argument("--channels", type=int, required=True)
    p.add_argument("--state", type=int, default=16)
    p.add_argument("--scan", choices=["loop", "chunked"], default="chunked")
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--block", type=int, default=0)
    p.add_argument("--segment", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, a.dtype)
    model = Mamba(a.channels, a.state, dtype)
    u = torch.randn(a.length, a.channels, dtype=dtype, requires_grad=True)
    dy = torch.randn(a.length, a.channels, dtype=dtype)
    times = {"forward": [], "backward": [], "both": []}
    for r in range(a.warmup + a.repeat):
        t0 = time.perf_counter()
        y = model(u, a.scan, a.chunk, a.block, a.segment)
        t1 = time.perf_counter()
        y.backward(dy)
        t2 = time.perf_counter()
        if r >= a.warmup:
            times["forward"].append(t1 - t0)
            times["backward"].append(t2 - t1)
            times["both"].append(t2 - t0)
        u.grad = None
        model.zero_grad()
    print(json.dumps({
        "bench": "torch_mamba", "scan": a.scan, "chunk": a.chunk, "block": a.block, "segment": a.segment,
        "length": a.length,
        "channels": a.channels, "state": a.state, "threads": a.threads, "dtype": a.dtype,
        "torch": torch.__version__, "forward_s": statistics.median(times["forward"]),
        "backward_s": statistics.median(times["backward"]), "fwd_bwd_s": statistics.median(times["both"]),
        "fwd_bwd_spread_s": max(times["both"]) - min(times["both"]),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }))


if __name__ == "__main__":
    main()
