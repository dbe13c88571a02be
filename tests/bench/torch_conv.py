#!/usr/bin/python3
"""PyTorch reference for `strand bench fftconv`: the same causal long convolution (and the HyenaDNA
order-2 hyena layer with its implicit filter) with torch.fft.rfft/irfft at n = 2L, forward and backward timed on CPU with a
fixed thread count. Prints one JSON line with the same timing keys as strand's bench.

usage: /usr/bin/python3 tests/bench/torch_conv.py --length L --channels D [--threads N]
           [--layer conv|hyena] [--repeat R] [--dtype float32|float64] [--filter implicit|given]
Use Debian's /usr/bin/python3 (python3-torch); another python3 first on PATH may not see torch.
"""
import argparse
import json
import math
import statistics
import time

import torch


def fftconv(u, k, L):
    """Causal convolution along the last axis: y[..., t] = sum_{s<=t} k[..., t-s] u[..., s]."""
    n = 2 * L
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :L]


class Sin(torch.nn.Module):
    """sin(w x) with a trainable frequency per feature (HyenaDNA's filter activation)."""

    def __init__(self, width, freq, dtype):
        super().__init__()
        self.freq = torch.nn.Parameter(torch.full((width,), freq, dtype=dtype))

    def forward(self, x):
        return torch.sin(self.freq * x)


class Hyena(torch.nn.Module):
    """Order-2 hyena operator (HyenaDNA), the layer `strand bench fftconv --layer hyena` times with
    strand's defaults: (x0, x1, v) = split(short_causal_dwconv_k3(W_in u)), y = W_out(x0 * (h * (x1 v)
    + b x1 v)), with the long filter h from the implicit FFN (positional features t, cos and sin of
    8 frequencies; Linear 17->64, Sin, Linear 64->64, Sin, Linear 64->d) times the exponential
    decay window, recomputed every call like strand's. --filter given skips the FFN (a fixed
    random h), to time the layer's own work alone."""

    def __init__(self, d, L, dtype, implicit=True, width=64, freqs=8):
        super().__init__()
        self.L = L
        self.implicit = implicit
        self.w_in = torch.nn.Linear(d, 3 * d, dtype=dtype)
        self.short = torch.nn.Conv1d(3 * d, 3 * d, 3, groups=3 * d, padding=2, dtype=dtype)
        self.w_out = torch.nn.Linear(d, d, dtype=dtype)
        self.b = torch.nn.Parameter(torch.randn(d, dtype=dtype))
        if implicit:
            t = torch.linspace(0, 1, L, dtype=dtype).unsqueeze(1)  # (L, 1)
            f = torch.linspace(1e-4, freqs - 1, freqs, dtype=dtype).unsqueeze(0)
            phase = 2 * math.pi * f * torch.arange(L, dtype=dtype).unsqueeze(1) / L
            self.register_buffer("z", torch.cat([t, torch.cos(phase), -torch.sin(phase)], dim=1))
            slow, fast = math.log(1e-2) / 1.5, math.log(1e-2) / 0.3
            delta = torch.linspace(slow, fast, d, dtype=dtype).abs()
            self.register_buffer("decay", torch.exp(-t * delta.unsqueeze(0)))  # (L, d), made once
            self.ffn = torch.nn.Sequential(
                torch.nn.Linear(2 * freqs + 1, width, dtype=dtype), Sin(width, 10.0, dtype),
                torch.nn.Linear(width, width, dtype=dtype), Sin(width, 10.0, dtype),
                torch.nn.Linear(width, d, bias=False, dtype=dtype))
        else:
            self.h = torch.nn.Parameter(torch.randn(d, L, dtype=dtype) / L**0.5)

    def forward(self, u):  # u (L, d)
        h = (self.ffn(self.z) * self.decay).t() if self.implicit else self.h  # (d, L)
        z = self.w_in(u).t().unsqueeze(0)  # (1, 3d, L)
        z = self.short(z)[..., : self.L]  # causal: keep the first L outputs of the padded conv
        x0, x1, v = z.squeeze(0).chunk(3, dim=0)  # (d, L) each
        xv = x1 * v
        y = x0 * (fftconv(xv, h, self.L) + self.b.unsqueeze(1) * xv)
        return self.w_out(y.t())  # (L, d)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--length", type=int, required=True)
    p.add_argument("--channels", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--layer", choices=["conv", "hyena"], default="conv")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--filter", choices=["implicit", "given"], default="implicit",
                   help="hyena: the implicit filter FFN (as strand), or a fixed random filter")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, a.dtype)
    L, d = a.length, a.channels

    if a.layer == "conv":
        # Channels first, length contiguous: the layout torch FFT convolutions use.
        u = torch.randn(d, L, dtype=dtype, requires_grad=True)
        k = torch.randn(d, L, dtype=dtype, requires_grad=True)
        dy = torch.randn(d, L, dtype=dtype)

        def forward():
            return fftconv(u, k, L)

        params = [u, k]
    else:
        layer = Hyena(d, L, dtype, implicit=a.filter == "implicit")
        u = torch.randn(L, d, dtype=dtype, requires_grad=True)
        dy = torch.randn(L, d, dtype=dtype)

        def forward():
            return layer(u)

        params = [u] + list(layer.parameters())

    fwd, bwd, both = [], [], []
    for r in range(a.repeat + 1):  # r = 0: warm-up
        for t in params:
            t.grad = None
        t0 = time.perf_counter()
        y = forward()
        t1 = time.perf_counter()
        y.backward(dy)
        t2 = time.perf_counter()
        if r > 0:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            both.append(t2 - t0)
    print(json.dumps({
        "bench": "torch_conv", "length": L, "channels": d, "threads": a.threads, "layer": a.layer,
        "dtype": a.dtype, "transform_size": 2 * L, "repeat": a.repeat,
        "filter": a.filter if a.layer == "hyena" else None,
        "forward_s": statistics.median(fwd), "backward_s": statistics.median(bwd),
        "fwd_bwd_s": statistics.median(both), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
