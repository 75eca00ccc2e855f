"""Independent re-implementations of the design facts (docs/ARCHITECTURE.md) used by several tests."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def functional_block(params: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """1×1 C→D/4, GN(32), ReLU; 3×3, GN, ReLU; 1×1 D/4→D, GN; + 1×1 C→D, GN; ReLU — no conv bias."""

    def conv_gn(name, inp, padding=0):
        y = F.conv2d(inp, params[f"{prefix}.{name}.weight"], padding=padding)
        return F.group_norm(
            y, 32, params[f"{prefix}.{name}.norm.weight"], params[f"{prefix}.{name}.norm.bias"], eps=1e-5
        )

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
            out = out + weights[s * len(dims) + l] * functional_block(
                params, f"bottleneck_layers.{l}.0", raw[:, s, start : start + c]
            )
            start += c
    return out


# ---------------------------------------------------------------------------- matching, by hand
# points are (x, y) pixels with centres at integers, frames are rescaled by plain scaling
# (x·W'/W), descriptors are bilinearly upsampled (align_corners=False) to the square load
# frame, and a point takes the cosine nearest neighbour there.


def by_hand_descriptors(hf, images: list[Image.Image]) -> torch.Tensor:
    """(B, D, R, R): PIL bilinear resize to the load size, [0, 255] → [-1, 1], raw maps, network."""
    size = hf.load_size
    batch = torch.stack(
        [
            torch.from_numpy(np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float32)).permute(2, 0, 1)
            / 127.5
            - 1.0
            for im in images
        ]
    )
    with torch.no_grad():
        return hf.network(hf.extractor.run(batch)).float()


def load_frame_similarities(src_desc, tgt_desc, points_xy, src_wh, load: int):
    """Cosine maps (N, L, L) of each query against the target, both maps upsampled to L × L."""
    up = lambda d: F.interpolate(d[None].float(), size=(load, load), mode="bilinear", align_corners=False)[0]
    src, tgt = F.normalize(up(src_desc), dim=0), F.normalize(up(tgt_desc), dim=0)  # (D, L, L)
    maps = []
    for x, y in points_xy:
        qx = min(max(int(np.round(x * load / src_wh[0])), 0), load - 1)  # plain scaling, then round
        qy = min(max(int(np.round(y * load / src_wh[1])), 0), load - 1)
        maps.append(torch.einsum("d,dhw->hw", src[:, qy, qx], tgt))
    return torch.stack(maps), src, tgt


def argmax_xy(sim: torch.Tensor) -> torch.Tensor:
    """(N, L, L) → (N, 2) (x, y) of each maximum: flat index = y·L + x."""
    load = sim.shape[-1]
    flat = sim.reshape(len(sim), -1).argmax(dim=1)
    return torch.stack([flat % load, flat // load], dim=1).float()


def to_target(points_load: torch.Tensor, load: int, tgt_wh) -> torch.Tensor:
    return points_load * torch.tensor([tgt_wh[0] / load, tgt_wh[1] / load])
