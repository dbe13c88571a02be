#!/usr/bin/python3
"""PyTorch reference for `strand bench train`: the same model (embedding, blocks of norm + mixer +
norm + MLP, final norm, tied or separate head, mean cross-entropy), the same AdamW, clipping and
learning-rate schedule, started from strand's initial parameters and trained on strand's token
windows, both read from the directory `strand bench train --dump DIR` wrote. Prints one JSON line:
the per-step losses, the median and spread of the timed steps, tokens/s, and, when DIR/strand.json
is there (strand's own line from the same dump), the loss differences and the step-time ratio
torch / strand.

    mpirun -n 1 strand bench train --config tests/bench/models/conv.ini --dump /tmp/d
    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 tests/bench/torch_model.py --dump /tmp/d

Mixers: conv (causal depthwise short conv), hyena (HyenaDNA order 2, implicit sine-FFN filter,
FFT long convolution at n = 2L), attn (causal multi-head attention with RoPE and grouped K/V heads,
written out densely: torch 1.13 has no scaled_dot_product_attention, so it holds L x L scores per
head). The math follows src/model/model.c, src/kernels/layers.c and src/model/mixers/{conv,hyena,
attn}.c term by term (see each function). Use Debian's /usr/bin/python3 (python3-torch).
"""
import argparse
import configparser
import json
import math
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F


def load_dump(d):
    with open(os.path.join(d, "manifest.json")) as f:
        man = json.load(f)
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(os.path.join(d, man["config"]))
    dtype = np.float32 if man["dtype"] == "float32" else np.float64
    flat = np.fromfile(os.path.join(d, man["params_file"]), dtype=dtype)
    if flat.size != man["total"]:
        raise SystemExit(f"{d}: params.bin has {flat.size} values, the manifest says {man['total']}")
    tokens = np.fromfile(os.path.join(d, man["tokens_file"]), dtype="<u4").reshape(man["tokens_shape"])
    params = {}
    for p in man["params"]:
        t = torch.from_numpy(flat[p["offset"]:p["offset"] + p["size"]].copy()).reshape(p["shape"])
        params[p["name"]] = torch.nn.Parameter(t)
    decay = {p["name"]: p["decay"] for p in man["params"]}
    strand = None
    path = os.path.join(d, "strand.json")
    if os.path.exists(path):
        with open(path) as f:
            strand = json.loads(f.readline())
    return man, cfg, params, decay, torch.from_numpy(tokens.astype(np.int64)), strand


def causal_dwconv(u, w, b):
    """strand_shortconv / conv1d_causal_forward: out[t, c] = b[c] + sum_j w[c, j] u[t - j, c], u (L, C),
    w (C, K): tap j looks j rows back (zeros before row 0)."""
    L, C = u.shape
    K = w.shape[1]
    y = F.conv1d(u.t().unsqueeze(0), torch.flip(w, [1]).unsqueeze(1), b, padding=K - 1, groups=C)
    return y[0, :, :L].t()


def fftconv(z, h):
    """Causal long convolution along rows: y[t] = sum_{s<=t} h[t-s] z[s], (L, C) each, at n = 2L."""
    L = z.shape[0]
    n = 2 * L
    return torch.fft.irfft(torch.fft.rfft(z, n=n, dim=0) * torch.fft.rfft(h, n=n, dim=0), n=n, dim=0)[:L]


class Model:
    def __init__(self, man, cfg, params, dtype):
        m, tr = cfg["model"], cfg["train"]
        self.p = params
        self.dtype = dtype
        self.C = int(m["d_model"])
        self.V = int(man["vocab"])
        self.L = int(tr["seq_len"])
        self.layers = [s.strip() for s in m["layers"].split(",")]
        self.layer_norm = m["norm"] == "layernorm"
        self.pre_norm = m["norm_position"] != "post"
        self.swiglu = m["mlp"] == "swiglu"
        self.eps = float(m["norm_eps"])
        self.tied = m["tie_embeddings"] == "true"
        self.cfg = cfg
        L, C = self.L, self.C
        if "hyena" in self.layers:
            hy = cfg["hyena"]
            K = int(hy["frequencies"])
            Lmax = int(hy["max_len"]) or L
            l = np.arange(L, dtype=np.float64)
            t = l / (Lmax - 1) if Lmax > 1 else np.zeros(L)
            f = 1e-4 + np.arange(K) * ((K - 1) - 1e-4) / (K - 1) if K > 1 else np.array([1e-4])
            cycles = f[None, :] * (l[:, None] / Lmax)
            cycles -= np.floor(cycles)
            z = np.concatenate([t[:, None], np.cos(2 * math.pi * cycles), -np.sin(2 * math.pi * cycles)], 1)
            slow, fast = math.log(1e-2) / float(hy["decay_slow"]), math.log(1e-2) / float(hy["decay_fast"])
            c = np.arange(C, dtype=np.float64)
            delta = np.abs(slow + (fast - slow) * c / (C - 1) if C > 1 else np.full(C, slow))
            self.hy_z = torch.from_numpy(z.astype(dtype))
            self.hy_decay = torch.from_numpy(np.exp(-delta[None, :] * t[:, None]).astype(dtype))  # (L, C)
            self.hy_depth = int(hy["filter_depth"])
        if "attn" in self.layers:
            at = cfg["attn"]
            self.H = int(at["heads"])
            self.G = int(at["kv_heads"]) or self.H
            self.E = C // self.H
            self.window = int(at["window"])
            if at["segment_memory"] == "true":
                raise SystemExit("attn.segment_memory is not modelled here")
            E, base = self.E, float(at["rope_base"])
            pos = np.arange(L, dtype=np.float64)
            ang = pos[:, None] * base ** (-2.0 * np.arange(E // 2) / E)
            self.cos = torch.from_numpy(np.cos(ang).astype(dtype))  # (L, E/2)
            self.sin = torch.from_numpy(np.sin(ang).astype(dtype))
            i = torch.arange(L)
            masked = i[None, :] > i[:, None]
            if self.window > 0:
                masked |= i[None, :] <= i[:, None] - self.window
            self.mask = masked
        for name in self.layers:
            if name not in ("conv", "hyena", "attn"):
                raise SystemExit(f"mixer {name}: not modelled in torch_model.py")

    def norm(self, x, prefix):
        w = self.p[prefix + ".weight"]
        if self.layer_norm:
            return F.layer_norm(x, (self.C,), w, self.p[prefix + ".bias"], self.eps)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def mlp(self, x, prefix):
        fc = F.linear(x, self.p[prefix + ".fc.weight"], self.p[prefix + ".fc.bias"])
        if self.swiglu:
            a, b = fc.chunk(2, dim=-1)
            act = F.silu(a) * b
        else:
            act = F.gelu(fc, approximate="tanh")
        return F.linear(act, self.p[prefix + ".proj.weight"], self.p[prefix + ".proj.bias"])

    def conv(self, u, m):
        return causal_dwconv(u, self.p[m + "weight"], self.p[m + "bias"])

    def hyena(self, u, m):
        p, C = self.p, self.C
        proj = F.linear(u, p[m + "in_proj.weight"], p[m + "in_proj.bias"])  # (L, 3C)
        uc = causal_dwconv(proj, p[m + "short_conv.weight"], p[m + "short_conv.bias"])
        x0, x1, v = uc[:, :C], uc[:, C:2 * C], uc[:, 2 * C:]
        a, w = self.hy_z, p[m + "filter.sine_freq"]
        for i in range(self.hy_depth):
            a = torch.sin(w * F.linear(a, p[m + f"filter.fc{i}.weight"], p[m + f"filter.fc{i}.bias"]))
        h = F.linear(a, p[m + "filter.out.weight"]) * self.hy_decay  # (L, C)
        z = x1 * v
        gated = x0 * (fftconv(z, h) + p[m + "filter.bias"] * z)
        return F.linear(gated, p[m + "out_proj.weight"], p[m + "out_proj.bias"])

    def rope(self, x, heads):
        """Rotate pairs (2j, 2j+1) of each head by pos * base^(-2j/E); x (L, heads*E)."""
        L, E = x.shape[0], self.E
        x = x.reshape(L, heads, E // 2, 2)
        c, s = self.cos[:, None, :], self.sin[:, None, :]
        a, b = x[..., 0], x[..., 1]
        return torch.stack([a * c - b * s, a * s + b * c], -1).reshape(L, heads * E)

    def attn(self, u, m):
        p, H, G, E = self.p, self.H, self.G, self.E
        L = u.shape[0]
        q = self.rope(F.linear(u, p[m + "wq"]), H)
        kv = F.linear(u, p[m + "wkv"])
        k = self.rope(kv[:, :G * E], G)
        v = kv[:, G * E:]
        q = q.reshape(L, H, E).transpose(0, 1)  # (H, L, E)
        k = k.reshape(L, G, E).transpose(0, 1).repeat_interleave(H // G, dim=0)
        v = v.reshape(L, G, E).transpose(0, 1).repeat_interleave(H // G, dim=0)
        s = (q @ k.transpose(1, 2)) * (1.0 / math.sqrt(E))
        y = torch.softmax(s.masked_fill(self.mask, float("-inf")), dim=-1) @ v  # (H, L, E)
        return F.linear(y.transpose(0, 1).reshape(L, H * E), p[m + "wo"])

    def loss_sum(self, tokens):
        """Summed cross-entropy (nats) of one window of L + 1 tokens."""
        p = self.p
        x = p["embedding.weight"][tokens[:-1]]
        for l, name in enumerate(self.layers):
            mix = getattr(self, name)
            m = f"block{l}.mixer."
            if self.pre_norm:
                h = x + mix(self.norm(x, f"block{l}.norm1"), m)
                x = h + self.mlp(self.norm(h, f"block{l}.norm2"), f"block{l}.mlp")
            else:
                h = self.norm(x + mix(x, m), f"block{l}.norm1")
                x = self.norm(h + self.mlp(h, f"block{l}.mlp"), f"block{l}.norm2")
        if self.pre_norm:
            x = self.norm(x, "final_norm")
        head = p["embedding.weight"] if self.tied else p["head.weight"]
        return F.cross_entropy(x @ head.t(), tokens[1:], reduction="sum")


def lr_at(tr, step):
    """strand_lr_at: linear warm-up to train.lr, then cosine to lr * min_lr_ratio over train.steps."""
    peak = float(tr["lr"])
    floor_lr = peak * float(tr["min_lr_ratio"])
    steps = int(tr["steps"])
    warmup = min(int(tr["warmup_steps"]), steps)
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    decay_steps = steps - warmup
    if decay_steps <= 1:
        return peak
    progress = min((step - warmup) / (decay_steps - 1), 1.0)
    return floor_lr + 0.5 * (peak - floor_lr) * (1.0 + math.cos(math.pi * progress))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", required=True, help="the directory strand bench train --dump wrote")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    man, cfg, params, decay, tokens, strand = load_dump(a.dump)
    dtype = np.float32 if man["dtype"] == "float32" else np.float64
    model = Model(man, cfg, params, dtype)
    tr = cfg["train"]
    names = list(params)
    groups = [
        {"params": [params[n] for n in names if decay[n]], "weight_decay": float(tr["weight_decay"])},
        {"params": [params[n] for n in names if not decay[n]], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=float(tr["lr"]), betas=(float(tr["beta1"]), float(tr["beta2"])),
                            eps=float(tr["adam_eps"]))
    clip = float(tr["grad_clip"])
    steps, dp, warmup = man["steps"], man["dp"], man["warmup"]
    tokens_per_step = dp * man["seq_len"]
    losses, norms, times = [], [], []
    for step in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for d in range(dp):
            loss = model.loss_sum(tokens[step, d]) / tokens_per_step
            loss.backward()
            total += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), clip if clip > 0 else float("inf"))
        for g in opt.param_groups:
            g["lr"] = lr_at(tr, step)
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(total)
        norms.append(float(norm))
        if step >= warmup:
            times.append(dt)
    med = statistics.median(times)
    out = {
        "bench": "torch_train", "torch": torch.__version__, "threads": a.threads, "layers": ",".join(model.layers),
        "d_model": model.C, "seq_len": man["seq_len"], "dp": dp, "parameters": sum(p.numel() for p in params.values()),
        "precision": man["precision"], "warmup": warmup, "steps": len(times), "step_s": med,
        "step_min_s": min(times), "step_max_s": max(times), "step_spread": (max(times) - min(times)) / med,
        "tokens_per_s": tokens_per_step / med, "losses": losses, "grad_norms": norms, "final_loss": losses[-1],
    }
    if strand:
        rel = [abs(t - s) / abs(s) for t, s in zip(losses, strand["losses"])]
        out.update({
            "strand_step_s": strand["step_s"], "strand_tokens_per_s": strand["tokens_per_s"],
            "strand_final_loss": strand["final_loss"], "final_loss_diff": losses[-1] - strand["final_loss"],
            "max_loss_rel_diff": max(rel), "torch_over_strand": med / strand["step_s"],
        })
    print(json.dumps(out))


if __name__ == "__main__":
    main()
