"""A classical, weight-free backbone with the shape of the diffusion feature bank.

``backbone.model: classical`` (preset ``backbone=classical``) is a fixed multi-scale filter bank
dressed as the frozen Stable Diffusion parts, so the feature extractor, the aggregation network,
the cache, training, evaluation, video training and test-time adaptation run on it unchanged:

* the "VAE" turns RGB into opponent colours (O1 = (R−G)/√2, O2 = (R+G−2B)/√6, O3 = (R+G+B)/√3;
  an orthonormal map, so decoding is its transpose) at the image's own size (factor 1, scaling
  factor 1, posterior of zero spread: ``latent=sample`` and ``mean`` agree);
* the "UNet" predicts zero noise, so the inversion plan keeps x_t = √ᾱ_t·x0 exactly. At a call at
  timestep t it undoes the scale (x0 = x_t/√ᾱ_t) and blurs with a Gaussian of σ_t =
  ``blur``·√(1−ᾱ_t): the *timesteps* are blur levels (t = −1: the sharp image). In noise mode the
  same blur also damps the added noise;
* its four decoder "blocks", coarse to fine as SD's ``up_blocks``, sit on grids of step
  ``strides[i]`` pixels, each with three "resnets" whose ``conv2`` is a pass-through tap (the
  forward hook point of :class:`hyperfeat.model.features.FeatureBank`):

  - ``resnets[0]``, the jet: Gaussian derivatives at σ = stride/2 of intensity (value, x, y, xx,
    xy, yy) and of the two colour-opponent channels (value, x, y): 12 channels;
  - ``resnets[1]``, colour histograms: soft hue bins (``hue_bins``, weighted by saturation) and 3
    grey-level bins (weighted by its lack), pooled over a box of side ``stride`` at 2×2 cells
    ±stride/2 around the point: 4·(hue_bins + 3) channels;
  - ``resnets[2]``, oriented-gradient histograms (HOG/SIFT-like local orientation energy):
    gradient magnitude in ``orientations`` soft unsigned orientation bins, pooled the same way:
    4·orientations channels.

  Coarser blocks pool over wider neighbourhoods (stride 32 at 128 px: the 2×2 cells span half the
  image), so deeper layers carry wider context, as the UNet's do. Every layer is L2-normalised per
  location (the colour histograms after a square root: the Hellinger map; orientation histograms
  clipped at 0.2 and renormalised, as SIFT), with a floor that leaves flat, signal-free regions
  short instead of blowing their rounding noise up to unit vectors.

The channel counts follow from the settings and must equal ``backbone.classical.channels`` (the
config states them, as SD's are known, so a network is built from the config alone). Everything
is deterministic; there are no weights to download or to seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperfeat.errors import ConfigError

CLASSICAL = "classical"
LAYERS_PER_BLOCK = 3
JET_CHANNELS = 12
GREY_BINS = 3
LAYOUT_CELLS = 4  # the 2×2 spatial cells of the histograms

_OPPONENT = torch.tensor(
    [
        [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
        [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)],
        [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
    ]
)  # rows: O1, O2, O3 from (R, G, B); orthonormal


@dataclass(frozen=True)
class ClassicalSettings:
    """The filter bank's settings (``backbone.classical``)."""

    strides: tuple[int, ...] = (32, 16, 8, 4)  # grid step of decoder blocks 0..n-1, coarse → fine, pixels
    orientations: int = 8
    hue_bins: int = 6
    blur: float = 6.0  # σ (pixels) of the timestep blur as ᾱ → 0
    channels: Optional[tuple[int, ...]] = None  # the stated per-layer counts (checked)

    @classmethod
    def from_config(cls, block: Any) -> "ClassicalSettings":
        from omegaconf import OmegaConf

        values = OmegaConf.to_container(block, resolve=True) if OmegaConf.is_config(block) else dict(block or {})
        settings = cls(
            strides=tuple(int(s) for s in values.get("strides", cls.strides)),
            orientations=int(values.get("orientations", cls.orientations)),
            hue_bins=int(values.get("hue_bins", cls.hue_bins)),
            blur=float(values.get("blur", cls.blur)),
            channels=None if values.get("channels") is None else tuple(int(c) for c in values["channels"]),
        )
        settings.check()
        return settings

    def layer_channels(self) -> list[int]:
        """Channels of every layer in decoder order (block-major, 3 per block)."""
        per_block = [JET_CHANNELS, LAYOUT_CELLS * (self.hue_bins + GREY_BINS), LAYOUT_CELLS * self.orientations]
        return per_block * len(self.strides)

    def check(self) -> None:
        if not self.strides or any(s < 1 for s in self.strides):
            raise ConfigError(f"backbone.classical.strides must be positive integers; got {list(self.strides)}")
        if self.orientations < 2 or self.hue_bins < 2:
            raise ConfigError(
                f"backbone.classical.orientations and hue_bins must be at least 2; "
                f"got {self.orientations}, {self.hue_bins}"
            )
        if self.blur < 0:
            raise ConfigError(f"backbone.classical.blur must be >= 0; got {self.blur}")
        derived = self.layer_channels()
        if self.channels is not None and list(self.channels) != derived:
            raise ConfigError(
                f"backbone.classical.channels {list(self.channels)} do not match what the settings make "
                f"(strides {list(self.strides)}, orientations {self.orientations}, hue_bins {self.hue_bins}): "
                f"{derived}; state those counts"
            )


# ----------------------------------------------------------------------------- filters


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ⌈3σ⌉, float32 (K,)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, H, W) → (B, C, H, W), separable Gaussian, reflected borders; σ ≤ 0.05: unchanged."""
    if sigma <= 0.05:
        return x
    kernel = gaussian_kernel(sigma).to(x)
    radius = kernel.numel() // 2
    channels = x.shape[1]
    pad_h, pad_w = min(radius, x.shape[-2] - 1), min(radius, x.shape[-1] - 1)
    out = F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect" if pad_w else "replicate")
    out = F.conv2d(
        out, kernel[radius - pad_w : radius + pad_w + 1].view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels
    )
    out = F.pad(out, (0, 0, pad_h, pad_h), mode="reflect" if pad_h else "replicate")
    return F.conv2d(
        out, kernel[radius - pad_h : radius + pad_h + 1].view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels
    )


def derivatives(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences (B, C, H, W) → d/dx, d/dy, replicated borders."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    dx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    dy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return dx, dy


def box_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over an odd box of side 2·⌊size/2⌋+1 centred on each pixel, replicated borders
    (separable running sums: the cost does not grow with the box); (B, C, H, W) → same shape."""
    half = size // 2
    if half < 1:
        return x
    for dim in (-1, -2):
        pad = (half + 1, half, 0, 0) if dim == -1 else (0, 0, half + 1, half)
        sums = F.pad(x, pad, mode="replicate").cumsum(dim)
        n = sums.shape[dim]
        x = (sums.narrow(dim, 2 * half + 1, n - 2 * half - 1) - sums.narrow(dim, 0, n - 2 * half - 1)) / (2 * half + 1)
    return x


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[..., i, j] = x[..., i + dy, j + dx], borders replicated; (B, C, H, W) → same shape."""
    h, w = x.shape[-2:]
    pad = (max(0, -dx), max(0, dx), max(0, -dy), max(0, dy))
    padded = F.pad(x, pad, mode="replicate")
    top, left = dy + max(0, -dy), dx + max(0, -dx)
    return padded[..., top : top + h, left : left + w]


def layout(hist: torch.Tensor, stride: int) -> torch.Tensor:
    """Histograms (B, K, H, W) → 2×2 cells pooled over boxes of side ``stride`` at ±stride/2:
    (B, 4K, H, W), cells ordered (−,−), (−,+), (+,−), (+,+) in (y, x)."""
    pooled = box_pool(hist, stride)
    off = max(1, stride // 2)
    return torch.cat([shift(pooled, sy * off, sx * off) for sy in (-1, 1) for sx in (-1, 1)], dim=1)


def to_grid(x: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, C, H, W) → (B, C, ⌈H/stride⌉, ⌈W/stride⌉): the mean of each stride² cell."""
    if stride <= 1:
        return x
    h, w = x.shape[-2:]
    return F.adaptive_avg_pool2d(x, (max(1, math.ceil(h / stride)), max(1, math.ceil(w / stride))))


def l2_normalise(x: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """(B, C, h, w) divided by √(‖x‖² + eps²) over channels: unit length where the signal is well
    above ``eps``, shrinking towards zero where there is none (a flat region's rounding noise is
    not blown up to a unit vector)."""
    return x / torch.sqrt((x**2).sum(dim=1, keepdim=True) + eps**2)


def sift_normalise(x: torch.Tensor, clip: float = 0.2) -> torch.Tensor:
    """SIFT's normalisation of histograms (B, C, h, w): normalise, clip at ``clip`` (no single
    strong edge dominates), renormalise to the length the first step gave."""
    first = l2_normalise(x)
    length = first.norm(dim=1, keepdim=True)
    clipped = first.clamp_max(clip)
    return clipped * (length / clipped.norm(dim=1, keepdim=True).clamp_min(1e-12))


def soft_angle_bins(angle: torch.Tensor, weight: torch.Tensor, bins: int, period: float) -> torch.Tensor:
    """Linear soft assignment of angles (B, H, W) into ``bins`` circular bins over ``period``,
    weighted: (B, bins, H, W)."""
    position = angle / period * bins  # in [0, bins)
    centres = torch.arange(bins, dtype=angle.dtype, device=angle.device).view(1, -1, 1, 1)
    distance = (position.unsqueeze(1) - centres).remainder(bins)
    distance = torch.minimum(distance, bins - distance)
    return weight.unsqueeze(1) * (1 - distance).clamp_min(0)


def orientation_histogram(intensity: torch.Tensor, orientations: int) -> torch.Tensor:
    """Per-pixel unsigned orientation energy: gradient magnitude of (B, 1, H, W) in soft bins
    over [0, π): (B, orientations, H, W)."""
    smooth = gaussian_blur(intensity, 1.0)
    dx, dy = derivatives(smooth)
    magnitude = torch.sqrt(dx**2 + dy**2 + 1e-12)[:, 0]  # (B, H, W)
    angle = torch.atan2(dy, dx)[:, 0].remainder(math.pi)
    return soft_angle_bins(angle, magnitude, orientations, math.pi)


def colour_histogram(opponent: torch.Tensor, hue_bins: int) -> torch.Tensor:
    """Per-pixel soft colour assignment of opponent colours (B, 3, H, W): ``hue_bins`` hue bins
    weighted by saturation and 3 grey-level bins weighted by its lack; (B, hue_bins + 3, H, W),
    each pixel's weights summing to 1."""
    o1, o2, o3 = opponent[:, 0], opponent[:, 1], opponent[:, 2]  # (B, H, W); inputs in [-1, 1] RGB
    chroma = torch.sqrt(o1**2 + o2**2 + 1e-12)
    saturation = (chroma / 0.5).clamp(0, 1)  # fully saturated at a chroma of 0.5 (RGB in [-1, 1])
    hue = torch.atan2(o2, o1).remainder(2 * math.pi)
    hues = soft_angle_bins(hue, saturation, hue_bins, 2 * math.pi)
    level = ((o3 / math.sqrt(3)).clamp(-1, 1) + 1) / 2 * (GREY_BINS - 1)  # grey level in [0, GREY_BINS-1]
    centres = torch.arange(GREY_BINS, dtype=level.dtype, device=level.device).view(1, -1, 1, 1)
    greys = (1 - saturation).unsqueeze(1) * (1 - (level.unsqueeze(1) - centres).abs()).clamp_min(0)
    return torch.cat([hues, greys], dim=1)


def jet(opponent: torch.Tensor, sigma: float) -> torch.Tensor:
    """Scale-normalised Gaussian jet at σ: intensity (value, x, y, xx, xy, yy) and the two colour
    channels (value, x, y); (B, 3, H, W) → (B, 12, H, W)."""
    smooth = gaussian_blur(opponent, sigma)
    dx, dy = derivatives(smooth)
    dxx, dxy = derivatives(dx)
    _, dyy = derivatives(dy)
    s, s2 = sigma, sigma**2
    intensity = [smooth[:, 2:3], s * dx[:, 2:3], s * dy[:, 2:3], s2 * dxx[:, 2:3], s2 * dxy[:, 2:3], s2 * dyy[:, 2:3]]
    colour = [smooth[:, :2], s * dx[:, :2], s * dy[:, :2]]
    return torch.cat(intensity + colour, dim=1)


# ----------------------------------------------------------------------------- the modules


class Tap(nn.Module):
    """A pass-through standing where a ResNet's ``conv2`` stands: the feature bank hooks it."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = int(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class TapLayer(nn.Module):
    """One "resnet" of a block: only its ``conv2`` tap."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.conv2 = Tap(out_channels)


class ClassicalBlock(nn.Module):
    """One decoder "block": the three layers of one grid step. Its output (what a hook on the
    block sees, e.g. DIFT's) is its layers' maps concatenated, (B, ΣC, h, w)."""

    def __init__(self, stride: int, channels: Sequence[int], settings: ClassicalSettings):
        super().__init__()
        self.stride = int(stride)
        self.settings = settings
        self.resnets = nn.ModuleList(TapLayer(c) for c in channels)

    def forward(self, image: torch.Tensor, orientation: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) opponent colours at this timestep's blur; orientation (B, K, H, W) and
        colour (B, Q, H, W) per-pixel histograms → (B, ΣC, H/stride, W/stride)."""
        s = self.stride
        jet_map = l2_normalise(to_grid(jet(image, max(1.0, s / 2)), s))  # (B, 12, h, w)
        colour_map = l2_normalise(to_grid(layout(colour, s), s).clamp_min(0).sqrt())  # (B, 4Q, h, w)
        hog = sift_normalise(to_grid(layout(orientation, s), s))  # (B, 4K, h, w)
        maps = [layer.conv2(m) for layer, m in zip(self.resnets, (jet_map, colour_map, hog))]
        return torch.cat(maps, dim=1)


class ClassicalUNet(nn.Module):
    """The filter bank in the UNet's place: ``forward(x_t, t, encoder_hidden_states)`` runs every
    block on the de-scaled, σ_t-blurred latent and returns ``.sample`` = zero noise."""

    def __init__(self, settings: ClassicalSettings):
        super().__init__()
        self.settings = settings
        channels = settings.layer_channels()
        self.up_blocks = nn.ModuleList(
            ClassicalBlock(stride, channels[LAYERS_PER_BLOCK * i : LAYERS_PER_BLOCK * (i + 1)], settings)
            for i, stride in enumerate(settings.strides)
        )
        self.config = SimpleNamespace(in_channels=3, out_channels=3, cross_attention_dim=1)
        from hyperfeat.model import schedule  # (diffusers: only when the bank is built, as for the UNet)

        self.register_buffer("alphas", schedule.alphas_cumprod(), persistent=False)  # (1000,)

    def blur_sigma(self, t: float) -> float:
        """σ_t = blur·√(1−ᾱ_t) (0 at t = −1, the clean latent)."""
        alpha = 1.0 if t < 0 else float(self.alphas[int(round(t))])
        return self.settings.blur * math.sqrt(max(0.0, 1.0 - alpha))

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | float, encoder_hidden_states: Any = None, **_: Any
    ) -> SimpleNamespace:  # sample: (B, 3, H, W)
        sample = sample.float()
        steps = torch.as_tensor(timestep, dtype=torch.float32).flatten().cpu()
        steps = steps.expand(sample.shape[0]) if steps.numel() == 1 else steps
        clean = torch.empty_like(sample)
        for t in steps.unique().tolist():  # noise mode: several timesteps in one batch
            rows = (steps == t).nonzero().flatten().to(sample.device)
            alpha = 1.0 if t < 0 else float(self.alphas[int(round(t))])
            clean[rows] = gaussian_blur(sample[rows] / math.sqrt(alpha), self.blur_sigma(t))
        orientation = orientation_histogram(clean[:, 2:3], self.settings.orientations)  # (B, K, H, W)
        colour = colour_histogram(clean, self.settings.hue_bins)  # (B, Q, H, W)
        for block in self.up_blocks:
            block(clean, orientation, colour)
        return SimpleNamespace(sample=torch.zeros_like(sample))


class _Posterior:
    """A posterior of zero spread: sampling gives the mean."""

    def __init__(self, mean: torch.Tensor):
        self.mean = mean

    def sample(self, generator: Any = None) -> torch.Tensor:
        return self.mean


class OpponentColourVAE(nn.Module):
    """The "VAE": RGB in [-1, 1] ↔ opponent colours, at the image's own size."""

    def __init__(self):
        super().__init__()
        self.register_buffer("matrix", _OPPONENT.clone(), persistent=False)  # (3, 3)
        self.config = SimpleNamespace(scaling_factor=1.0, latent_channels=3)

    def encode(self, images: torch.Tensor) -> SimpleNamespace:  # (B, 3, H, W) → latent_dist of (B, 3, H, W)
        latent = torch.einsum("oc,bchw->bohw", self.matrix.to(images.dtype), images)
        return SimpleNamespace(latent_dist=_Posterior(latent))

    def decode(self, latents: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=torch.einsum("oc,bohw->bchw", self.matrix.to(latents.dtype), latents))


class NullTextEncoder(nn.Module):
    """No text: the condition is zeros, (B, 77, 1); the filter bank ignores it."""

    def forward(self, ids: torch.Tensor) -> SimpleNamespace:  # (B, 77)
        return SimpleNamespace(last_hidden_state=torch.zeros(ids.shape[0], ids.shape[1], 1, device=ids.device))


class NullTokenizer:
    """Tokenizes any prompt to 77 zeros."""

    model_max_length = 77

    def __call__(self, prompt: str, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(input_ids=torch.zeros(1, self.model_max_length, dtype=torch.long))

    def __len__(self) -> int:
        return 1


def build_classical_components(settings: ClassicalSettings) -> tuple[nn.Module, nn.Module, nn.Module, NullTokenizer]:
    """UNet-, VAE-, text-encoder- and tokenizer-shaped parts of the filter bank."""
    return ClassicalUNet(settings), OpponentColourVAE(), NullTextEncoder(), NullTokenizer()


def classical_identity(block: Any) -> dict:
    """What decides the classical bank's maps (for :func:`hyperfeat.model.identity.feature_identity`)."""
    s = ClassicalSettings.from_config(block)
    return {"strides": list(s.strides), "orientations": s.orientations, "hue_bins": s.hue_bins, "blur": s.blur}
