"""Hedlin et al. 2023, "Unsupervised Semantic Correspondence Using Stable Diffusion" (``method=ldm``).

Not a describer: there is no dense descriptor. For each source point a random text embedding
(77 × the text width) is optimised so that the cross-attention of chosen decoder layers peaks at
the point; the target point is where that embedding's attention peaks in the target image.

Optimisation (per point, ``ldm.num_embeddings`` independent embeddings, all points and
embeddings of a pair in one batch):

- embedding ~ N(0, init_std²), Adam (``ldm.lr``) for ``ldm.steps`` steps;
- every step, each embedding sees its own random square crop of ``crop_fraction`` of the side
  that contains the point, resized to ``features.image_size``, VAE-encoded (posterior mean ×
  scaling factor) and noised to ``optimize_timestep`` with fresh noise;
- attention maps: the cross-attention probabilities of token ``token_index`` in each layer
  ``up_blocks.<i>.attentions.<j>`` (every transformer block in it), averaged over heads, caught
  with an attention processor of this module set through ``unet.set_attn_processor`` (the other
  processors are kept and everything is restored afterwards);
- loss: per layer, the map normalised to sum 1 against a Gaussian at the point (std ``sigma``
  pixels of a 512 image, scaled to the layer's grid) normalised alike, the squared error summed
  over cells × the cell count, averaged over layers.

Inference: the target's ``num_crops`` random crops (same fraction), noised to
``inference_timestep``; per crop and embedding, a spatial softmax of each layer's map, the mean
over layers, pasted into a full-image grid (at the latent resolution) where the crops are
averaged; embeddings averaged; the argmax cell is the match (its centre in pixels).

Cost per point: ``steps × num_embeddings`` UNet forward+backward passes (stopped after the last
chosen layer) and ``num_crops × num_embeddings`` forward passes; :attr:`LdmMatcher.stats`
counts them and the seconds spent.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from hyperfeat.errors import ConfigError
from hyperfeat.model import schedule
from hyperfeat.model.backbone import Backbone


class _Stop(Exception):
    """Raised once the last chosen layer's attention is kept: later layers are not needed."""


class AttentionStore:
    """Per-layer cross-attention maps (B, heads, N, 77) of one UNet call, keyed by processor name."""

    def __init__(self, names: list[str], stop_after: Optional[str] = None):
        self.names = names
        self.stop_after = stop_after
        self.maps: dict[str, torch.Tensor] = {}


class CrossAttentionCapture:
    """diffusers' plain attention (``AttnProcessor``), keeping the cross-attention probabilities."""

    def __init__(self, store: AttentionStore, name: str):
        self.store = store
        self.name = name

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs
    ):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        query = attn.head_to_batch_dim(query)
        probs = attn.get_attention_scores(query, key, attention_mask)  # (B·heads, N, 77)
        self.store.maps[self.name] = probs.reshape(-1, attn.heads, *probs.shape[1:])
        if self.name == self.store.stop_after:
            raise _Stop
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def cross_attention_names(unet: torch.nn.Module, layers) -> list[list[str]]:
    """Processor names of the cross-attentions (attn2) inside each ``up_blocks.<i>.attentions.<j>``."""
    valid = [
        [i, j] for i, block in enumerate(unet.up_blocks) for j in range(len(getattr(block, "attentions", None) or []))
    ]
    bad = [list(l) for l in layers if [int(l[0]), int(l[1])] not in valid]
    if bad:
        raise ConfigError(
            f"ldm.layers {bad} are not cross-attention layers of this UNet; valid [i, j] "
            f"(up_blocks.<i>.attentions.<j>): {valid}"
        )
    names = list(unet.attn_processors)
    out = []
    for i, j in layers:
        prefix = f"up_blocks.{int(i)}.attentions.{int(j)}."
        out.append([n for n in names if n.startswith(prefix) and ".attn2." in n])
    return out


@contextmanager
def capture_cross_attention(unet: torch.nn.Module, names: list[str], stop: bool = True) -> Iterator[AttentionStore]:
    """Swap the named processors for capturing ones; restore every original processor on exit."""
    originals = dict(unet.attn_processors)
    order = [n for n in originals if n in set(names)]
    store = AttentionStore(order, stop_after=order[-1] if stop else None)
    replaced = dict(originals)
    for name in order:
        replaced[name] = CrossAttentionCapture(store, name)
    unet.set_attn_processor(replaced)
    try:
        yield store
    finally:
        unet.set_attn_processor(dict(originals))


def gaussian_map(centres_uv: torch.Tensor, size: int, sigma_cells: float) -> torch.Tensor:
    """(B, 2) cell coordinates (u, v) → (B, size, size) Gaussians normalised to sum 1."""
    grid = torch.arange(size, dtype=torch.float32, device=centres_uv.device)
    du = (grid[None, :] - centres_uv[:, :1]) ** 2  # (B, size) over u (columns)
    dv = (grid[None, :] - centres_uv[:, 1:]) ** 2  # (B, size) over v (rows)
    g = torch.exp(-(dv[:, :, None] + du[:, None, :]) / (2 * sigma_cells**2))
    return g / g.sum(dim=(1, 2), keepdim=True)


class LdmMatcher:
    """Hedlin et al.'s prompt-optimisation matcher on a frozen backbone (see the module docstring)."""

    def __init__(self, cfg: DictConfig, backbone: Backbone):
        self.cfg = cfg
        self.backbone = backbone
        s = cfg.ldm
        self.settings = s
        self.layer_names = cross_attention_names(backbone.unet, s.layers)
        self.names = [n for group in self.layer_names for n in group]
        if not self.names:
            raise ConfigError(f"ldm.layers {list(s.layers)} hold no cross-attention")
        self.image_size = int(cfg.features.image_size)
        self.alphas = schedule.alphas_cumprod()
        self.text_dim = int(backbone.unet.config.cross_attention_dim)
        self.stats = {"points": 0, "unet_forward_backward": 0, "unet_forward": 0, "seconds": 0.0}

    @property
    def load_size(self) -> int:
        return int(self.cfg.features.load_size)

    @property
    def device(self) -> torch.device:
        return torch.device(self.backbone.device)

    def identity(self) -> dict:
        from omegaconf import OmegaConf

        from hyperfeat.model.identity import feature_identity

        ident = feature_identity(self.cfg)
        ident.pop("features")
        ident["method"] = "ldm"
        ident["ldm"] = OmegaConf.to_container(self.settings, resolve=True)
        return ident

    # ------------------------------------------------------------------ pieces
    def _crop_boxes(self, points: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
        """(P, 2) load-frame points → (P·n, 3) boxes (x0, y0, side) containing their point
        (all points given as NaN: anywhere in the image)."""
        L = self.load_size
        side = max(1, int(round(float(self.settings.crop_fraction) * L)))
        boxes = []
        for p in points.tolist():
            for _ in range(n):
                box = [0, 0, side]
                for axis in range(2):
                    if math.isnan(p[axis]):
                        lo, hi = 0, L - side
                    else:
                        c = int(round(p[axis]))
                        lo, hi = max(0, c - side + 1), min(c, L - side)
                        lo, hi = min(lo, hi), max(lo, hi)
                    box[axis] = lo + int(torch.randint(0, hi - lo + 1, (1,), generator=g))
                boxes.append(box)
        return torch.tensor(boxes, dtype=torch.long)

    @torch.no_grad()
    def _encode_crops(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Crops of a (3, L, L) image → latents (n, 4, s/8, s/8) (posterior mean × scaling factor)."""
        size = self.image_size
        crops = torch.stack([image[:, y0 : y0 + c, x0 : x0 + c] for x0, y0, c in boxes.tolist()])
        crops = F.interpolate(
            crops.to(self.device, torch.float32), size=(size, size), mode="bilinear", align_corners=False
        )
        return (
            self.backbone.vae.encode(crops.to(self.backbone.dtype)).latent_dist.mean.float()
            * self.backbone.latent_scale
        )

    def _layer_maps(
        self, latents: torch.Tensor, embeddings: torch.Tensor, t: int, g: torch.Generator
    ) -> list[torch.Tensor]:
        """Noised latents with their embeddings → per chosen layer (n, h, w) head-mean attention
        of token ``token_index`` (with grad when the embeddings have it)."""
        noise = torch.randn(latents.shape, generator=g).to(self.device)
        x_t = schedule.add_noise(latents, noise, self.alphas, [t])
        timesteps = torch.full((x_t.shape[0],), float(t), device=self.device)
        with capture_cross_attention(self.backbone.unet, self.names) as store:
            try:
                self.backbone.unet(
                    x_t.to(self.backbone.dtype), timesteps, encoder_hidden_states=embeddings.to(self.backbone.dtype)
                )
            except _Stop:
                pass
        token = int(self.settings.token_index)
        out = []
        for group in self.layer_names:
            maps = [store.maps[n][..., token].float().mean(1) for n in group]  # each (n, N)
            m = torch.stack(maps).mean(0)
            side = int(round(math.sqrt(m.shape[1])))
            out.append(m.reshape(-1, side, side))
        return out

    def attention_loss(self, maps: list[torch.Tensor], points_in_crop: torch.Tensor) -> torch.Tensor:
        """Per element (n,) loss of the layer maps against Gaussians at the points (crop pixels of
        an image_size crop)."""
        losses = []
        for m in maps:
            side = m.shape[-1]
            uv = points_in_crop * side / self.image_size
            sigma = float(self.settings.sigma) * side / 512.0
            target = gaussian_map(uv, side, max(sigma, 0.5))
            p = m / m.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
            losses.append(((p - target) ** 2).sum(dim=(1, 2)) * side * side)
        return torch.stack(losses).mean(0)

    # ------------------------------------------------------------------ the method
    def optimize(
        self, source: torch.Tensor, points: torch.Tensor, steps: Optional[int] = None, on_step=None
    ) -> tuple[torch.Tensor, list[float]]:
        """Source (3, L, L) in [-1, 1], points (P, 2) load-frame xy → embeddings (P, K, 77, E)
        and the mean loss of each step. ``on_step(step, embeddings)`` is called before each step."""
        s = self.settings
        steps = int(s.steps if steps is None else steps)
        P, K = points.shape[0], int(s.num_embeddings)
        g = torch.Generator().manual_seed(int(s.seed))
        emb = (
            (torch.randn((P * K, 77, self.text_dim), generator=g) * float(s.init_std))
            .to(self.device)
            .requires_grad_(True)
        )
        optimiser = torch.optim.Adam([emb], lr=float(s.lr))
        chunk = int(s.batch_size)
        history = []
        start = time.perf_counter()
        for step in range(steps):
            if on_step is not None:
                on_step(step, emb.detach().reshape(P, K, 77, -1))
            boxes = self._crop_boxes(points, K, g)  # (P·K, 3)
            scale = self.image_size / boxes[:, 2:].float()
            in_crop = (points.repeat_interleave(K, 0) - boxes[:, :2].float()) * scale  # (P·K, 2) crop pixels
            latents = self._encode_crops(source, boxes)
            optimiser.zero_grad()
            total = 0.0
            for a in range(0, P * K, chunk):
                with torch.enable_grad():
                    maps = self._layer_maps(latents[a : a + chunk], emb[a : a + chunk], int(s.optimize_timestep), g)
                    loss = self.attention_loss(maps, in_crop[a : a + chunk].to(self.device))
                    loss.sum().backward()
                total += float(loss.detach().sum())
            optimiser.step()
            history.append(total / (P * K))
            self.stats["unet_forward_backward"] += P * K
        self.stats["seconds"] += time.perf_counter() - start
        return emb.detach().reshape(P, K, 77, -1), history

    @torch.no_grad()
    def evaluate_loss(
        self,
        source: torch.Tensor,
        points: torch.Tensor,
        embeddings: torch.Tensor,
        seed: int = 12345,
        num_crops: int = 4,
    ) -> float:
        """The attention loss of embeddings (P, K, 77, E) on fixed crops and noise (``seed``), so
        two sets of embeddings are compared on the same draws."""
        P, K = embeddings.shape[:2]
        g = torch.Generator().manual_seed(seed)
        flat = embeddings.reshape(P * K, 77, -1).repeat_interleave(num_crops, 0)
        boxes = self._crop_boxes(points.repeat_interleave(K, 0), num_crops, g)  # (P·K·n, 3)
        in_crop = (points.repeat_interleave(K * num_crops, 0) - boxes[:, :2].float()) * (
            self.image_size / boxes[:, 2:].float()
        )
        latents = self._encode_crops(source, boxes)
        total = 0.0
        for a in range(0, flat.shape[0], int(self.settings.batch_size)):
            b = slice(a, a + int(self.settings.batch_size))
            maps = self._layer_maps(latents[b], flat[b], int(self.settings.optimize_timestep), g)
            total += float(self.attention_loss(maps, in_crop[b].to(self.device)).sum())
        return total / flat.shape[0]

    @torch.no_grad()
    def heatmap(self, target: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Target (3, L, L), embeddings (P, K, 77, E) → (P, r, r) averaged attention over crops
        and embeddings on the full image's latent-resolution grid (r = image_size / 8)."""
        s = self.settings
        P, K = embeddings.shape[:2]
        L, r = self.load_size, self.image_size // 8
        g = torch.Generator().manual_seed(int(s.seed) + 1)
        boxes = self._crop_boxes(torch.full((1, 2), float("nan")), int(s.num_crops), g)  # (C, 3)
        latents = self._encode_crops(target, boxes)  # (C, 4, r, r)
        C = latents.shape[0]
        canvas = torch.zeros((P, r, r), device=self.device)
        count = torch.zeros((r, r), device=self.device)
        flat_emb = embeddings.reshape(P * K, 77, -1)
        start = time.perf_counter()
        for c in range(C):
            x0, y0, side = boxes[c].tolist()
            lo_x, hi_x = round(x0 * r / L), round((x0 + side) * r / L)
            lo_y, hi_y = round(y0 * r / L), round((y0 + side) * r / L)
            per = []
            for a in range(0, P * K, int(s.batch_size)):
                e = flat_emb[a : a + int(s.batch_size)]
                maps = self._layer_maps(
                    latents[c : c + 1].expand(e.shape[0], -1, -1, -1), e, int(s.inference_timestep), g
                )
                soft = [torch.softmax(m.flatten(1), dim=1).reshape(-1, 1, *m.shape[1:]) for m in maps]
                resized = [
                    F.interpolate(m, size=(hi_y - lo_y, hi_x - lo_x), mode="bilinear", align_corners=False)
                    for m in soft
                ]
                per.append(torch.stack(resized).mean(0)[:, 0])  # (b, h, w): mean over layers
            crop_map = torch.cat(per).reshape(P, K, hi_y - lo_y, hi_x - lo_x).mean(1)
            canvas[:, lo_y:hi_y, lo_x:hi_x] += crop_map
            count[lo_y:hi_y, lo_x:hi_x] += 1
            self.stats["unet_forward"] += P * K
        self.stats["seconds"] += time.perf_counter() - start
        return torch.where(count > 0, canvas / count.clamp_min(1), torch.full_like(canvas, -1.0))

    def match(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        points: torch.Tensor,
        embeddings: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Source and target (3, L, L) in [-1, 1], points (P, 2) load-frame xy → (P, 2) load-frame
        xy in the target (the centre of the argmax cell)."""
        from hyperfeat.geometry import cells_to_pixels

        points = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 2)
        if embeddings is None:
            embeddings, _ = self.optimize(source, points)
        heat = self.heatmap(target, embeddings)  # (P, r, r)
        r = heat.shape[-1]
        flat = heat.flatten(1).argmax(1)
        cells = torch.stack([flat % r, flat // r], dim=1).float()  # (P, 2) (u, v)
        self.stats["points"] += points.shape[0]
        return cells_to_pixels(cells.cpu(), (self.load_size, self.load_size), (r, r))
