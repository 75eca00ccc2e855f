"""``Hyperfeatures``: the public inference object.

    hf = Hyperfeatures.from_checkpoint("checkpoints/last.ckpt", device="cuda")
    hf = Hyperfeatures.from_pretrained("dhf-sd15")         # or a saved folder, or a hub id
    desc = hf.describe(["cat1.jpg", "cat2.jpg"])          # (2, D, R, R)
    pts = hf.match("cat1.jpg", "cat2.jpg", [[120, 80]])    # (1, 2) xy in target pixels
    tracks, visible = hf.track("clip.mp4", [[0, 120, 80]])  # (1, T, 2), (1, T)

It is the trained-hyperfeature describer (:mod:`hyperfeat.describe.hyperfeatures`) with the
tasks as methods; each method is the task function of :mod:`hyperfeat.correspond` or
:mod:`hyperfeat.video.run` applied to ``self``, so any other describer can be passed to those
functions in its place.
"""

from __future__ import annotations

from typing import Optional

import torch

from hyperfeat.correspond.matching import is_mutual, match_points
from hyperfeat.describe.hyperfeatures import HyperfeatureDescriber
from hyperfeat.geometry import rescale_points
from hyperfeat.images import ImageLike, load_image
from hyperfeat.video import run as video_run


class Hyperfeatures(HyperfeatureDescriber):
    """A frozen backbone, its feature extractor and a trained aggregation network, with the
    correspondence tasks as methods."""

    # ------------------------------------------------------------------ correspondence
    def match(
        self,
        source: ImageLike,
        target: ImageLike,
        source_points,
        method: str = "nn",
        temperature: Optional[float] = None,
    ) -> torch.Tensor:
        """Source points (N, 2) xy in source pixels → target points (N, 2) xy in target pixels.

        method: ``nn`` (nearest neighbour), ``mutual_nn`` (nearest neighbour; see
        :meth:`match_mutual` for the mutual flags) or ``soft_argmax``.
        """
        return self.match_mutual(source, target, source_points, method, temperature)[0]

    def match_mutual(
        self,
        source: ImageLike,
        target: ImageLike,
        source_points,
        method: str = "nn",
        temperature: Optional[float] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`match`, also returning (N,) bool: whether each match is a mutual nearest neighbour."""
        src_img, tgt_img = load_image(source), load_image(target)
        from hyperfeat.geometry import as_points, check_inside

        points = as_points(source_points, "source points")  # (N, 2); (N, 3), empty or NaN: one line
        check_inside(points, src_img.size, "source image")
        desc = self.describe([src_img, tgt_img])  # (2, D, R, R)
        frame = (self.load_size, self.load_size)
        in_load = rescale_points(points, src_img.size, frame)
        temp = float(self.cfg.eval.softmax_temperature if temperature is None else temperature)
        pred = match_points(desc[0], desc[1], in_load, frame, frame, method=method, upsample=True, temperature=temp)
        if isinstance(pred, tuple):  # mutual_nn: the flags come with the matches
            pred, mutual = pred
        else:
            mutual = is_mutual(desc[0], desc[1], in_load, frame, frame)
        return rescale_points(pred, frame, tgt_img.size), mutual

    # ------------------------------------------------------------------ video
    # ``frames``: a video file, a folder of frames (sorted by name), a list of frames (paths, PIL
    # images, uint8 arrays, (3, H, W) tensors), or a (T, 3, H, W) tensor in [0, 1]. Files, folders and
    # lists are read with the longer side at ``video.frame_size``; every point given or returned is
    # in pixels of the frames' own (original) size: x right, y down, pixel centres at integers, a
    # (W, H) frame covering x in [-0.5, W - 0.5], y in [-0.5, H - 0.5]. ``descriptors`` (T, D, h, w)
    # from :meth:`describe_video` skips describing the frames again.
    def describe_video(self, frames, cache_dir=None, progress: bool = False) -> torch.Tensor:
        """Per-frame descriptors (T, D, R, R) on the CPU; each frame is stretched to the square
        ``features.load_size``, so cell (u, v) = (x · R / W, y · R / H). ``cache_dir`` (default
        ``video.cache_dir``) caches them per video and checkpoint."""
        return video_run.describe_frames(self, frames, cache_dir=cache_dir, progress=progress)

    def track(
        self, frames, query_points, descriptors: Optional[torch.Tensor] = None, progress: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Track points through a video.

        ``query_points`` (N, 3) rows of (t, x, y): t an integer frame index in [0, T), (x, y)
        pixels of that frame. Returns tracks (N, T, 2) xy pixels and visible (N, T) bool (CPU);
        at its own frame a query is returned exactly and visible. The tracker is ``video.tracker``
        with its ``video.trackers.<name>`` settings. A query outside the frame or past the end raises DataError
        before any descriptor is computed. See :func:`hyperfeat.video.run.track`.
        """
        return video_run.track(self, frames, query_points, descriptors=descriptors, progress=progress)

    def propagate(
        self, frames, first_mask, descriptors: Optional[torch.Tensor] = None, progress: bool = False
    ) -> torch.Tensor:
        """Propagate a first-frame mask of object ids (H, W) (0 = background; the frames' own
        size, e.g. a DAVIS annotation PNG read with ``hyperfeat.data.videos.davis.read_mask``) →
        masks (T, H, W) int64, frame 0 being the given mask. Settings: ``video.queue_length``,
        ``radius``, ``topk``, ``temperature``. See :func:`hyperfeat.video.run.propagate`.
        """
        return video_run.propagate(self, frames, first_mask, descriptors=descriptors, progress=progress)

    def propagate_joints(
        self, frames, joints, descriptors: Optional[torch.Tensor] = None, progress: bool = False
    ) -> torch.Tensor:
        """Propagate keypoints (J, 2) xy of frame 0 (pixels) → (T, J, 2) xy pixels, frame 0 being
        the given points. Heat maps of std ``video.keypoint_sigma`` cells with the propagation
        settings. See :func:`hyperfeat.video.run.propagate_joints`.
        """
        return video_run.propagate_joints(self, frames, joints, descriptors=descriptors, progress=progress)

    # ------------------------------------------------------------------ test-time adaptation
    def save_pretrained(self, folder, metrics: Optional[dict] = None, picture=None) -> str:
        """As :meth:`HyperfeatureDescriber.save_pretrained`, the model card with the mixing-weight
        picture (:func:`hyperfeat.viz.mixing.save_mixing_picture`) unless ``picture`` says otherwise."""
        from hyperfeat.viz.mixing import save_mixing_picture

        return super().save_pretrained(folder, metrics=metrics, picture=picture or save_mixing_picture)

    def adapt(
        self, frames, steps: int = 20, lr: Optional[float] = None, progress: bool = False, **settings
    ) -> "Hyperfeatures":
        """A copy whose aggregation network took ``steps`` self-supervised steps (AdamW at ``lr``; None:
        the objective's default, :data:`hyperfeat.train.adapt.LEARNING_RATES`) on this very video: on
        warped copies of its own frames (``objective="warp"``, the default for a network not trained on
        the walk), or by the cycle walk (``objective="walk"``, the default for a walk-trained network or
        when ``mirror`` is given): :func:`hyperfeat.train.adapt.adapt_objective`. The backbone and
        ``self`` are unchanged. ``frames``:
        any video form the video methods take. ``settings``: the other fields of
        :class:`hyperfeat.train.adapt.AdaptSettings` (clip_length, max_stride, clips_per_step,
        temperature, pool, edge_dropout, seed, max_frames, and ``mirror``: end each walk on the
        mirrored first frame; None, the default, takes the walk the network was trained with, else
        the mirrored one: :func:`hyperfeat.train.adapt.adapt_mirrored`; ``objective``, ``warps``,
        ``warp_pairs``, ``warp_weight``, ``warp_temperature``). The copy's ``adaptation`` holds the
        per-step losses, the walk loss of fixed clips and the warp loss of the warped copies before
        and after, which walk and which objective."""
        from hyperfeat.train.adapt import AdaptSettings, adapt_network
        from hyperfeat.video.frames import load_frames

        video = load_frames(self, frames)
        rate = {} if lr is None else {"lr": float(lr)}
        result = adapt_network(
            self, video.frames, AdaptSettings(steps=int(steps), **rate, **settings), progress=progress
        )
        adapted = type(self)(self.cfg, self.backbone, result.network, self.meta)
        adapted.adaptation = result
        return adapted

    # ------------------------------------------------------------------ state changes
    def changes(
        self,
        frames,
        queries=None,
        grid: Optional[int] = None,
        mask=None,
        tracks=None,
        visible=None,
        descriptors: Optional[torch.Tensor] = None,
        progress: bool = False,
        is_reference=None,
    ):
        """Changes of state of points of a video (see :func:`hyperfeat.video.changes.video_changes`).

        Exactly one of ``queries`` (N, 3) rows of (t, x, y), ``grid`` (n × n points on frame 0) or
        ``mask`` (H, W) of frame 0 (object points inside, ``grid`` — default 16 — background
        references outside). ``tracks``/``visible``: use these tracks of the queries instead of
        tracking (e.g. another tracker's, read with :func:`hyperfeat.video.queries.load_tracks`);
        ``is_reference`` (N,) with ``queries``: the background reference points. Returns a
        :class:`hyperfeat.correspond.changes.StateChanges`: drift curves, events, regions, state
        segments and prototypes; ``result.found`` is False (with ``result.message`` saying why) when
        no change was found. Settings: the config's ``changes`` block.
        """
        from hyperfeat.video.changes import video_changes

        return video_changes(
            self,
            frames,
            queries=queries,
            grid=grid,
            mask=mask,
            tracks=tracks,
            visible=visible,
            descriptors=descriptors,
            progress=progress,
            is_reference=is_reference,
        )
