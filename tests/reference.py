"""Independent re-implementations of the design facts (docs/ARCHITECTURE.md) used by several tests."""

import torch
import torch.nn.functional as F


def functional_block(params: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """1×1 C→D/4, GN(32), ReLU; 3×3, GN, ReLU; 1×1 D/4→D, GN; + 1×1 C→D, GN; ReLU — no conv bias."""

    def conv_gn(name, inp, padding=0):
        y = F.conv2d(inp, params[f"{prefix}.{name}.weight"], padding=padding)
        return F.group_norm(y, 32, params[f"{prefix}.{name}.norm.weight"], params[f"{prefix}.{name}.norm.bias"], eps=1e-5)

    out = F.relu(conv_gn("conv1", x))
    out = F.relu(conv_gn("conv2", out, padding=1))
    out = conv_gn("conv3", out)
    return F.relu(out + conv_gn("shortcut", x))


def functional_aggregation(params: dict, dims: list, raw: torch.Tensor) -> torch.Tensor:
    """Σ softmax(w)_{s·L+l} · block_l(raw[:, s, layer l's channels]). raw: (B, S, C, R, R)."""
    weights = torch.softmax(params["mixing_weights"], 0)
    out = 0
    for s in range(raw.shape[1]):
        start = 0
        for l, c in enumerate(dims):
            out = out + weights[s * len(dims) + l] * functional_block(params, f"bottleneck_layers.{l}.0", raw[:, s, start:start + c])
            start += c
    return out
