"""Temporal training: the cycle-walk loss against a by-hand computation, learning on a tiny video,
test-time adaptation, the video presets end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hyperfeat.config import load_config
from hyperfeat.train.losses import cycle_walk_loss
from tests.helpers import make_hf, translated_video, write_frames


def by_hand_walk_loss(frames: np.ndarray, temperature: float) -> float:
    """The palindrome walk with explicit loops: frames (K, D, n) per cell, float64."""
    k = frames.shape[0]
    unit = frames / np.linalg.norm(frames, axis=1, keepdims=True)

    def transition(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        n, m = a.shape[1], b.shape[1]
        out = np.zeros((n, m))
        for i in range(n):
            logits = [float(unit_dot(a[:, i], b[:, j])) / temperature for j in range(m)]
            top = max(logits)
            weights = [math.exp(v - top) for v in logits]
            out[i] = np.array(weights) / sum(weights)
        return out

    def unit_dot(u: np.ndarray, v: np.ndarray) -> float:
        return float(sum(x * y for x, y in zip(u, v)))

    losses = []
    for end in range(1, k):
        walk = np.eye(unit.shape[2])
        for t in range(end):
            walk = walk @ transition(unit[t], unit[t + 1])
        for t in range(end, 0, -1):
            walk = walk @ transition(unit[t], unit[t - 1])
        losses.append(-np.mean([math.log(walk[i, i]) for i in range(walk.shape[0])]))
    return float(np.mean(losses))


def test_walk_loss_matches_by_hand_computation():
    gen = torch.Generator().manual_seed(3)
    frames = torch.randn(1, 3, 5, 2, 3, generator=gen, dtype=torch.float64)  # (B, K, D, h, w)
    got = float(cycle_walk_loss(frames, temperature=0.3))
    want = by_hand_walk_loss(frames[0].flatten(2).numpy(), 0.3)
    assert got == pytest.approx(want, rel=1e-6)


def test_walk_loss_is_minimal_for_identical_distinct_features_and_higher_when_shuffled():
    eye = torch.eye(6).reshape(6, 2, 3)  # six cells, each its own one-hot descriptor
    same = eye.expand(4, -1, -1, -1)[None]  # (1, K=4, D=6, 2, 3): the same frame four times
    identical = float(cycle_walk_loss(same, temperature=0.05))
    assert identical < 1e-6
    gen = torch.Generator().manual_seed(0)
    shuffled = same.clone()
    for k in range(1, 4):  # later frames: each cell's descriptor replaced by a random other cell's mix
        shuffled[0, k] = torch.randn(6, 2, 3, generator=gen)
    assert float(cycle_walk_loss(shuffled, temperature=0.05)) > identical + 0.5
    flat = torch.ones(1, 3, 6, 2, 3)  # featureless frames: the walk is uniform, back home with 1/n
    assert float(cycle_walk_loss(flat, temperature=0.05)) == pytest.approx(math.log(6), rel=1e-5)


def test_walk_loss_rejects_bad_shapes():
    from hyperfeat.errors import DataError

    with pytest.raises(DataError, match=r"\(B, K >= 2, D, h, w\)"):
        cycle_walk_loss(torch.zeros(1, 1, 4, 2, 2))


def _frame_folders(tmp_path, names=("a", "b")):
    root = tmp_path / "videos"
    for i, name in enumerate(names):
        write_frames(translated_video(steps=5, origin=(60 + 10 * i, 40)), root / name)
    return root


def test_training_on_a_tiny_video_lowers_the_walk_loss(parts, tmp_path):
    from hyperfeat.data.videos.temporal import FrameClips, VideoFolder, collate_clips
    from hyperfeat.model.checkpoint import CheckpointMeta
    from hyperfeat.model.features import FeatureExtractor
    from hyperfeat.train.module import TrainSettings, VideoWalkModule, WalkSettings

    cfg, backbone, network, channels = parts
    import copy

    extractor = FeatureExtractor(backbone, cfg.features)
    meta = CheckpointMeta(cfg, channels, extractor.layers, list(cfg.features.save_steps))
    module = VideoWalkModule(
        extractor,
        copy.deepcopy(network),
        TrainSettings.from_config(cfg),
        meta,
        WalkSettings(temperature=0.07, pool=2, edge_dropout=0.0),
    )
    clips = FrameClips(
        VideoFolder(_frame_folders(tmp_path)),
        int(cfg.features.load_size),
        clip_length=3,
        max_stride=2,
        clips_per_video=2,
    )
    batch = collate_clips([clips[i] for i in range(len(clips))])
    with torch.no_grad():
        raw = extractor.run(batch.pop("frame_images").flatten(0, 1))
    batch["frame_raw"] = raw.unflatten(0, (len(clips), 3))  # the cached form: the backbone ran once
    optimiser = torch.optim.AdamW(module.aggregation.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(module._walk_loss(batch))
    for _ in range(12):
        loss = module._walk_loss(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        after = float(module._walk_loss(batch))
    assert after < before - 0.05


def test_adapt_changes_only_a_copy_of_the_aggregation_network_and_lowers_its_walk_loss(parts):
    hf = make_hf(parts)
    own = {k: v.clone() for k, v in hf.network.state_dict().items()}
    unet = {k: v.clone() for k, v in list(hf.backbone.unet.state_dict().items())[:5]}
    adapted = hf.adapt(translated_video(steps=5), steps=10, lr=3e-3, clip_length=3, max_stride=2, objective="walk")
    assert adapted.backbone is hf.backbone and adapted.network is not hf.network
    assert all(torch.equal(v, hf.network.state_dict()[k]) for k, v in own.items())  # the original is untouched
    assert all(torch.equal(v, hf.backbone.unet.state_dict()[k]) for k, v in unet.items())
    assert any(not torch.equal(v, adapted.network.state_dict()[k]) for k, v in own.items())
    info = adapted.adaptation
    assert len(info.losses) == 10
    assert info.loss_after < info.loss_before
    assert adapted.identity()["network"] != hf.identity()["network"]  # descriptor caches keep them apart


def test_adapt_default_lr_is_the_settings_one_lowers_the_walk_loss_and_stays_closer_than_3e3(parts):
    from hyperfeat.train.adapt import LEARNING_RATES

    hf = make_hf(parts)
    video = translated_video(steps=5)
    start = {k: v.clone() for k, v in hf.network.state_dict().items()}

    def moved(adapted) -> float:  # L2 distance of the adapted weights from the start
        got = adapted.network.state_dict()
        return float(sum(((got[k].float() - v.float()) ** 2).sum() for k, v in start.items()) ** 0.5)

    walk = dict(clip_length=3, max_stride=2, objective="walk")
    plain = hf.adapt(video, steps=10, **walk)
    explicit = hf.adapt(video, steps=10, lr=LEARNING_RATES["walk"], **walk)
    strong = hf.adapt(video, steps=10, lr=3e-3, **walk)
    assert plain.adaptation.losses == pytest.approx(explicit.adaptation.losses)  # None → the objective's lr
    assert plain.adaptation.loss_after < plain.adaptation.loss_before
    assert 0 < moved(plain) < moved(strong)


@pytest.mark.parametrize(
    "name, data, module",
    [("video_supervised", "davis_tracks", "HyperfeatModule"), ("video_selfsup", "video_folder", "VideoWalkModule")],
)
def test_video_presets_load(name, data, module):
    from hyperfeat.train.module import module_class

    cfg = load_config(overrides=[f"experiment={name}"])
    assert cfg.data.name == data and cfg.backbone.model == "tiny" and cfg.train.cache_features
    assert module_class(cfg).__name__ == module
    assert cfg.train.monitor == ("val/loss" if name == "video_selfsup" else "val/pck@0.1")


def test_selfsup_preset_trains_on_a_video_folder_into_a_checkpoint_that_tracks(tmp_path):
    from hyperfeat.api import Hyperfeatures
    from hyperfeat.train.trainer import train

    root = _frame_folders(tmp_path, ("a", "b", "c"))
    cfg = load_config(
        overrides=[
            "experiment=video_selfsup",
            f"data.root={root}",
            "data.val_fraction=0.34",
            "data.clips_per_video=2",
            "data.clip_length=3",
            "data.max_stride=2",
            "train.max_steps=3",
            "train.val_every_n_steps=3",
            "logger.backend=none",
            f"paths.output_dir={tmp_path / 'out'}",
            f"paths.checkpoint_dir={tmp_path / 'ckpt'}",
        ]
    )
    last = train(cfg, enable_progress_bar=False)
    from hyperfeat.data.videos.temporal import build_temporal_dataset

    frames = set()
    for split in ("train", "val"):
        clips = build_temporal_dataset(cfg.data, split, int(cfg.features.load_size))
        frames |= {(item["video"], int(t)) for item in clips for t in item["frame_indices"]}
    cached = list((tmp_path / "out" / "feature_cache").rglob("*.pt"))
    assert len(cached) == len(frames)  # every frame met once, however many clips hold it
    hf = Hyperfeatures.from_checkpoint(last)
    tracks, visible = hf.track(translated_video(steps=4), [[0, 50.0, 40.0]])
    assert tracks.shape == (1, 4, 2) and visible.shape == (1, 4)


def test_walk_across_the_batch_defeats_position_only_descriptors():
    cells = torch.eye(6).reshape(6, 2, 3)  # one descriptor per position, the same in every clip
    position_only = cells.expand(3, 4, -1, -1, -1)  # (B=3, K=4, D=6, 2, 3)
    assert float(cycle_walk_loss(position_only, temperature=0.05)) < 1e-6  # the plain walk is won by position
    assert float(cycle_walk_loss(position_only, temperature=0.05, across_batch=True)) == pytest.approx(
        math.log(3), rel=1e-4
    )
    content = torch.eye(18).reshape(18, 3, 2, 3).permute(1, 0, 2, 3)  # (3, D=18, 2, 3): every clip its own cells
    distinct = content[:, None].expand(-1, 4, -1, -1, -1)
    assert float(cycle_walk_loss(distinct, temperature=0.05, across_batch=True)) < 1e-6


def _walk_to_home_by_hand(frames: torch.Tensor, home: torch.Tensor, homes: list, temperature: float) -> float:
    """The walk loss of one clip computed in numpy, step by step: frames (1, K=3, D, h, w), its home
    frame (1, D, h, w) and ``homes``, the (start cell, home cell) of each walk that counts."""

    def softmax_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # a (D, n), b (D, m): cosine / temperature
        a, b = a / np.linalg.norm(a, axis=0), b / np.linalg.norm(b, axis=0)
        logits = a.T @ b / temperature
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    cells, home_cells = frames[0].flatten(2).numpy(), home[0].flatten(1).numpy()  # (K, D, n), (D, n)
    losses = []
    for end in (1, 2):
        walk = np.eye(cells.shape[-1])
        for t in range(end):
            walk = walk @ softmax_rows(cells[t], cells[t + 1])
        for t in range(end, 1, -1):
            walk = walk @ softmax_rows(cells[t], cells[t - 1])
        walk = walk @ softmax_rows(cells[1], home_cells)
        losses.append(-np.mean([math.log(walk[i, j]) for i, j in homes]))
    return float(np.mean(losses))


def test_walk_to_the_mirrored_home_matches_by_hand_and_defeats_position_only_descriptors():
    gen = torch.Generator().manual_seed(5)
    frames = torch.randn(1, 3, 4, 2, 3, generator=gen, dtype=torch.float64)  # (B, K, D, h, w)
    home = torch.randn(1, 4, 2, 3, generator=gen, dtype=torch.float64)  # (B, D, h, w)
    temperature = 0.4
    mirror = [(y * 3 + x, y * 3 + (2 - x)) for y in range(2) for x in range(3)]  # cell (y, x) → (y, 2 − x)
    got = float(cycle_walk_loss(frames, temperature=temperature, mirrored_home=home))
    assert got == pytest.approx(_walk_to_home_by_hand(frames, home, mirror, temperature), rel=1e-9)

    position_only = torch.eye(6).reshape(6, 2, 3).expand(2, 3, -1, -1, -1)  # (B=2, K=3, D=6, 2, 3)
    assert float(cycle_walk_loss(position_only, temperature=0.05)) < 1e-6  # the plain walk is won by position
    mirrored_position = position_only[:, 0]  # the mirrored frame's cells encode their own position too
    assert float(cycle_walk_loss(position_only, temperature=0.05, mirrored_home=mirrored_position)) > 10
    content = torch.randn(2, 8, 2, 4, generator=gen)  # what is there, the same in every frame
    clip = content[:, None].expand(-1, 3, -1, -1, -1)
    for across in (False, True):
        assert float(cycle_walk_loss(clip, temperature=0.05, mirrored_home=content.flip(-1), across_batch=across)) < 0.1
    assert float(cycle_walk_loss(clip, temperature=0.05, pool=2, mirrored_home=content.flip(-1))) < 0.1
    with pytest.raises(Exception, match=r"mirrored_home must be \(B, D, h, w\)"):
        cycle_walk_loss(clip, mirrored_home=content[:1])


def test_walk_to_the_shifted_home_matches_by_hand_and_defeats_position_only_descriptors():
    from hyperfeat.train.losses import shift_maps

    gen = torch.Generator().manual_seed(6)
    frames = torch.randn(1, 3, 4, 3, 4, generator=gen, dtype=torch.float64)  # (B, K, D, h, w)
    home = torch.randn(1, 4, 3, 4, generator=gen, dtype=torch.float64)  # (B, D, h, w)
    temperature, dy, dx = 0.4, 1, -2
    kept = [(y * 4 + x, (y + dy) * 4 + x + dx) for y in range(3) for x in range(4) if y + dy < 3 and x + dx >= 0]
    assert len(kept) == 4  # the other 8 walks' homes left the frame: not counted
    got = float(cycle_walk_loss(frames, temperature=temperature, shifted_home=(home, dy, dx)))
    assert got == pytest.approx(_walk_to_home_by_hand(frames, home, kept, temperature), rel=1e-9)

    position_only = torch.eye(16).reshape(16, 4, 4).expand(2, 3, -1, -1, -1)  # (B=2, K=3, D=16, 4, 4)
    assert float(cycle_walk_loss(position_only, temperature=0.05)) < 1e-6  # the plain walk is won by position
    assert float(cycle_walk_loss(position_only, temperature=0.05, shifted_home=(position_only[:, 0], 2, 0))) > 10
    content = torch.randn(2, 8, 4, 4, generator=gen)  # what is there, the same in every frame
    clip = content[:, None].expand(-1, 3, -1, -1, -1)
    moved = shift_maps(content, 2, -2)
    assert torch.equal(moved[..., 2:, :2], content[..., :2, 2:]) and not moved[..., :2, :].any()
    for across in (False, True):
        home_in = (moved, 2, -2)
        assert float(cycle_walk_loss(clip, temperature=0.05, shifted_home=home_in, across_batch=across)) < 0.1
    assert float(cycle_walk_loss(clip, temperature=0.05, pool=2, shifted_home=(moved, 2, -2))) < 0.1
    with pytest.raises(Exception, match=r"multiples of pool=2"):
        cycle_walk_loss(clip, pool=2, shifted_home=(moved, 1, 0))
    with pytest.raises(Exception, match="mirrored or on the shifted"):
        cycle_walk_loss(clip, mirrored_home=content, shifted_home=(moved, 2, -2))
    with pytest.raises(Exception, match=r"moves the whole 4×4 map out of view"):
        shift_maps(content, 4, 0)


def test_adapt_with_the_mirrored_home_lowers_that_walk_and_checks_its_maps(parts):
    from hyperfeat.errors import HyperfeatError
    from hyperfeat.train.adapt import AdaptSettings, adapt_network, video_raw_maps

    hf = make_hf(parts)
    video = translated_video(steps=5)
    adapted = hf.adapt(video, steps=10, lr=3e-3, clip_length=3, max_stride=2, mirror=True)
    info = adapted.adaptation
    assert info.loss_after < info.loss_before
    plain = hf.adapt(video, steps=10, lr=3e-3, clip_length=3, max_stride=2, mirror=False)
    assert not plain.adaptation.mirror and info.mirror
    assert plain.adaptation.loss_before != pytest.approx(info.loss_before)  # another walk: home is the mirror
    raw, _ = video_raw_maps(hf, video)
    mirrored, _ = video_raw_maps(hf, video, mirrored=True)
    assert not torch.equal(raw, mirrored)
    direct = adapt_network(
        hf,
        None,
        AdaptSettings(steps=10, lr=3e-3, clip_length=3, max_stride=2, mirror=True, objective="walk"),
        raw=raw,
        raw_mirrored=mirrored,
    )
    assert direct.losses == pytest.approx(info.losses, rel=1e-4)  # the same maps as from the frames
    with pytest.raises(HyperfeatError, match="mirrored adaptation walk needs the frames or raw_mirrored"):
        adapt_network(hf, None, AdaptSettings(steps=1, mirror=True), raw=raw)
    with pytest.raises(HyperfeatError, match="raw_mirrored must have the raw maps' shape"):
        adapt_network(hf, None, AdaptSettings(steps=1, mirror=True), raw=raw, raw_mirrored=mirrored[:3])


def test_selfsup_with_the_mirrored_home_caches_the_mirrored_frames_and_walks_to_them(parts, tmp_path):
    from hyperfeat.data.videos.temporal import build_temporal_dataset, collate_clips
    from hyperfeat.model.checkpoint import load_checkpoint
    from hyperfeat.train.trainer import train

    root = _frame_folders(tmp_path, ("a", "b", "c"))
    cfg = load_config(
        overrides=[
            "experiment=video_selfsup",
            f"data.root={root}",
            "data.val_fraction=0.34",
            "data.clips_per_video=2",
            "data.clip_length=3",
            "data.max_stride=2",
            "data.mirrored_home=true",
            "train.max_steps=3",
            "train.val_every_n_steps=3",
            "logger.backend=none",
            f"paths.output_dir={tmp_path / 'out'}",
            f"paths.checkpoint_dir={tmp_path / 'ckpt'}",
        ]
    )
    clips = build_temporal_dataset(cfg.data, "train", int(cfg.features.load_size))
    item = clips[0]
    assert torch.equal(item["mirrored_home_image"], item["frame_images"][0].flip(-1))
    batch = collate_clips([clips[0], clips[1]])
    assert batch["mirrored_home_image"].shape == (2, *item["frame_images"].shape[1:])
    last = train(cfg, enable_progress_bar=False)
    frames, homes = set(), set()
    for split in ("train", "val"):
        for it in build_temporal_dataset(cfg.data, split, int(cfg.features.load_size)):
            frames |= {(it["video"], int(t)) for t in it["frame_indices"]}
            homes.add((it["video"], int(it["frame_indices"][0])))
    cached = list((tmp_path / "out" / "feature_cache").rglob("*.pt"))
    assert len(cached) == len(frames) + len(homes)  # the mirrored first frames are cached beside the frames
    network, meta = load_checkpoint(last)[:2]
    assert meta.config.data.mirrored_home is True


def test_walk_module_ends_the_walk_on_the_batch_mirrored_home(parts, tmp_path):
    import copy

    from hyperfeat.data.videos.temporal import FrameClips, VideoFolder, collate_clips
    from hyperfeat.model.checkpoint import CheckpointMeta
    from hyperfeat.model.features import FeatureExtractor
    from hyperfeat.train.module import TrainSettings, VideoWalkModule, WalkSettings

    cfg, backbone, network, channels = parts
    extractor = FeatureExtractor(backbone, cfg.features)
    meta = CheckpointMeta(cfg, channels, extractor.layers, list(cfg.features.save_steps))
    module = VideoWalkModule(
        extractor,
        copy.deepcopy(network),
        TrainSettings.from_config(cfg),
        meta,
        WalkSettings(temperature=0.07, pool=2, edge_dropout=0.0),
    ).eval()
    clips = FrameClips(
        VideoFolder(_frame_folders(tmp_path)),
        int(cfg.features.load_size),
        clip_length=3,
        max_stride=2,
        clips_per_video=2,
        mirrored_home=True,
    )
    batch = collate_clips([clips[i] for i in range(len(clips))])
    rng = np.random.default_rng
    with torch.no_grad():
        desc, raw = module.describe_clips(batch)  # (B, K, D, R, R), (B, K, S, C, R, R)
        home = module.aggregation(extractor.run(batch["mirrored_home_image"]))  # (B, D, R, R)
        got = float(module._walk_loss(batch, rng(0)))
        unmirrored = {k: v for k, v in batch.items() if k != "mirrored_home_image"}
        plain = float(module._walk_loss(unmirrored, rng(0)))
    assert got == pytest.approx(float(cycle_walk_loss(desc, 0.07, 2, mirrored_home=home)), rel=1e-5)
    assert got != pytest.approx(plain)

    # train.walk_shift: the walk ends on frame 0's raw maps shifted by the drawn (dy, dx), as cycle_walk_loss says
    from hyperfeat.errors import ConfigError
    from hyperfeat.train.losses import draw_shift, shift_maps

    module.walk = WalkSettings(temperature=0.07, pool=2, edge_dropout=0.0, shift=0.25)
    with torch.no_grad():
        shifted = float(module._walk_loss(unmirrored, rng(3)))
        dy, dx = draw_shift(rng(3), desc.shape[-1], 2, 0.25)
        home = module.aggregation(shift_maps(raw[:, 0], dy, dx))  # (B, D, R, R)
    assert (dy, dx) != (0, 0) and dy % 2 == 0 and dx % 2 == 0 and max(abs(dy), abs(dx)) <= desc.shape[-1] // 4
    assert shifted == pytest.approx(float(cycle_walk_loss(desc, 0.07, 2, shifted_home=(home, dy, dx))), rel=1e-5)
    assert shifted != pytest.approx(plain)
    with pytest.raises(ConfigError, match="a walk ends on one home"):
        module._walk_loss(batch, rng(3))
    with pytest.raises(ConfigError, match=r"train.walk_shift must be in \[0, 1\)"):
        WalkSettings(shift=1.5)


def test_adaptation_walk_defaults_to_the_walk_the_network_was_trained_with(parts):
    from types import SimpleNamespace

    from hyperfeat.train.adapt import AdaptSettings, adapt_mirrored

    def trained_on(*overrides: str) -> SimpleNamespace:
        return SimpleNamespace(meta=SimpleNamespace(config=load_config(overrides=list(overrides))))

    auto = AdaptSettings()
    assert adapt_mirrored(SimpleNamespace(meta=None), auto)  # untrained: the mirrored walk
    assert adapt_mirrored(trained_on("experiment=smoke"), auto)  # semantic pairs
    assert adapt_mirrored(trained_on("experiment=video_supervised"), auto)  # tracks
    assert not adapt_mirrored(trained_on("experiment=video_selfsup"), auto)  # the plain walk it learned
    assert adapt_mirrored(trained_on("experiment=video_selfsup", "data.mirrored_home=true"), auto)
    assert not adapt_mirrored(SimpleNamespace(meta=None), AdaptSettings(mirror=False))  # asked for: as asked
    assert adapt_mirrored(trained_on("experiment=video_selfsup"), AdaptSettings(mirror=True))
    hf = make_hf(parts)
    assert hf.meta is None or not str(hf.meta.config.data.name) == "video_folder"
    walked = hf.adapt(translated_video(steps=4), steps=1, clip_length=2, max_stride=1, objective="walk")
    assert walked.adaptation.mirror


def test_adapt_on_warped_copies_lowers_the_warp_loss_moves_the_network_and_checks_its_settings(parts):
    from hyperfeat.errors import HyperfeatError
    from hyperfeat.train.adapt import AdaptSettings, adapt_network, video_raw_maps, warped_copies

    hf = make_hf(parts)
    video = translated_video(steps=5)
    raw, picked = video_raw_maps(hf, video)
    copies = warped_copies(hf, video, picked, count=3, seed=0)
    assert copies.raw.shape == (3, *raw.shape[1:]) and copies.index.tolist() == [0, 2, 4]
    assert copies.points_a.shape == copies.points_b.shape == (3, 64, 2) and copies.valid.any()
    assert not torch.equal(copies.raw, raw[copies.index])  # a warped, recoloured copy, not the frame
    start = {k: v.clone() for k, v in hf.network.state_dict().items()}
    for objective in ("warp", "walk+warp"):
        adapted = hf.adapt(video, steps=10, lr=3e-3, objective=objective, warps=4, clip_length=3, max_stride=2)
        info = adapted.adaptation
        assert info.objective == objective and len(info.losses) == 10
        assert info.warp_after < info.warp_before  # the warp loss of every copy falls
        got = adapted.network.state_dict()
        assert any(not torch.equal(got[k], v) for k, v in start.items())
        assert all(torch.equal(hf.network.state_dict()[k], v) for k, v in start.items())  # the original stays
    walk = hf.adapt(video, steps=2, clip_length=3, max_stride=2, objective="walk").adaptation
    assert walk.objective == "walk" and math.isnan(walk.warp_before)
    with pytest.raises(HyperfeatError, match="warps the frames"):
        adapt_network(hf, None, AdaptSettings(steps=1, objective="warp"), raw=raw)
    with pytest.raises(HyperfeatError, match="objective must be one of"):
        adapt_network(hf, video, AdaptSettings(steps=1, objective="jump"))
    with pytest.raises(HyperfeatError, match="needs warps >= 1"):
        adapt_network(hf, video, AdaptSettings(steps=1, objective="warp", warps=0))
    # warp_temperature is the warp loss's: before adapting, the loss of the same copies at it, by hand
    from hyperfeat.train.losses import correspondence_loss

    copies = warped_copies(hf, video, picked, count=4, seed=0)
    with torch.no_grad():
        desc_a, desc_b = hf.network(torch.cat([raw[copies.index], copies.raw]).float()).chunk(2)  # (4, D, R, R)
    losses = []
    for t in (0.07, 0.01):
        info = hf.adapt(video, steps=0, objective="warp", warps=4, warp_temperature=t).adaptation
        want = correspondence_loss(
            desc_a, desc_b, copies.points_a, copies.points_b, copies.valid, load_size=hf.load_size, temperature=t
        )
        assert info.warp_before == pytest.approx(float(want), rel=1e-4)
        losses.append(info.warp_before)
    assert losses[0] != pytest.approx(losses[1])
    with pytest.raises(HyperfeatError, match="warp_temperature > 0"):
        adapt_network(hf, video, AdaptSettings(steps=1, objective="warp", warp_temperature=0.0))


def test_adaptation_objective_defaults_to_warps_unless_the_network_learned_the_walk_or_a_walk_is_asked(parts):
    from types import SimpleNamespace

    from hyperfeat.train.adapt import LEARNING_RATES, AdaptSettings, adapt_objective

    def trained_on(*overrides: str) -> SimpleNamespace:
        return SimpleNamespace(meta=SimpleNamespace(config=load_config(overrides=list(overrides))))

    auto = AdaptSettings()
    assert adapt_objective(SimpleNamespace(meta=None), auto) == "warp"  # untrained
    assert adapt_objective(trained_on("experiment=smoke"), auto) == "warp"  # semantic pairs
    assert adapt_objective(trained_on("experiment=video_supervised"), auto) == "warp"  # tracks
    assert adapt_objective(trained_on("experiment=video_selfsup"), auto) == "walk"  # the walk it learned
    assert adapt_objective(SimpleNamespace(meta=None), AdaptSettings(mirror=False)) == "walk"  # a walk asked for
    assert adapt_objective(trained_on("experiment=video_selfsup"), AdaptSettings(objective="warp")) == "warp"
    resolved = auto.resolved(SimpleNamespace(meta=None))
    assert resolved.objective == "warp" and resolved.lr == LEARNING_RATES["warp"]
    assert AdaptSettings(lr=1e-4).resolved(SimpleNamespace(meta=None)).lr == 1e-4  # given: as given
    hf = make_hf(parts)
    info = hf.adapt(translated_video(steps=4), steps=2, clip_length=2, max_stride=1, warps=2).adaptation
    assert info.objective == "warp" and not info.mirror and info.warp_after < info.warp_before
