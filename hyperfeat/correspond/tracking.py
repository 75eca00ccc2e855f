"""The window tracker (the original point tracker): a local search with a fixed cosine floor
and a cycle check. :mod:`hyperfeat.correspond.tracker` holds the memory tracker."""

from __future__ import annotations

from typing import Sequence

import torch

from hyperfeat.correspond.common import (
    _argmax_cell,
    _check_descriptors,
    _check_image_size,
    _refine,
    _window_mask,
    sample_descriptors,
)
from hyperfeat.errors import DataError
from hyperfeat.geometry import cells_to_pixels, pixels_to_cells

# ---------------------------------------------------------------------------------------------
# point tracking


def _check_queries(queries: torch.Tensor, num_frames: int, image_size: tuple[int, int]) -> None:
    if queries.ndim != 2 or queries.shape[-1] != 3:
        raise DataError(f"queries must be (N, 3) rows of (t, x, y); got shape {tuple(queries.shape)}")
    width, height = image_size
    bad = ~torch.isfinite(queries).all(dim=1)
    if bad.any():
        n = int(bad.nonzero()[0])
        raise DataError(f"query {n} has a non-finite value: {queries[n].tolist()}")
    for n, (t, x, y) in enumerate(queries.tolist()):
        if t != int(t) or not 0 <= t < num_frames:
            raise DataError(f"query {n} is at t={t}, past the video: t must be an integer in [0, {num_frames - 1}] (T={num_frames})")
        if not -0.5 <= x <= width - 0.5 or not -0.5 <= y <= height - 0.5:
            raise DataError(
                f"query {n} at (x, y)=({x:g}, {y:g}) is outside the frame: x must be in [-0.5, {width - 0.5:g}], "
                f"y in [-0.5, {height - 0.5:g}] for frames of (W, H)={image_size}"
            )


def _start_tracks(queries, num_frames: int, size: tuple[int, int], grid: tuple[int, int], device: torch.device):
    """Checked queries (N, 3), empty tracks (N, T, 2) in cells and visibility (N, T), the query
    cells (N, 2) and each cell's x and y (h, w): what every tracker here starts from."""
    h, w = grid
    queries = torch.as_tensor(queries, dtype=torch.float32).to(device)
    _check_queries(queries, num_frames, size)
    tracks = torch.zeros(queries.shape[0], num_frames, 2, device=device)  # cells
    visible = torch.zeros(queries.shape[0], num_frames, dtype=torch.bool, device=device)
    query_cells = pixels_to_cells(queries[:, 1:], size, (h, w))  # (N, 2)
    cell_y, cell_x = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device),
                                    torch.arange(w, dtype=torch.float32, device=device), indexing="ij")  # (h, w)
    return queries, tracks, visible, query_cells, cell_x, cell_y


def _finish_tracks(tracks: torch.Tensor, visible: torch.Tensor, queries: torch.Tensor, size: tuple[int, int],
                   grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tracks (N, T, 2) cells → pixels, with each query frame's position the query itself (exact, no round trip)."""
    tracks = cells_to_pixels(tracks, size, grid)
    tracks[torch.arange(queries.shape[0], device=tracks.device), queries[:, 0].long()] = queries[:, 1:]
    return tracks, visible


def _local_scores(scores: torch.Tensor, previous: torch.Tensor, radius: int, motion_penalty: float,
                  cell_x: torch.Tensor, cell_y: torch.Tensor) -> torch.Tensor:
    """The local search: scores (n, h, w) outside ``radius`` cells of ``previous`` (n, 2) cell xy
    set to −inf, minus the motion prior ``motion_penalty`` · (d / radius)², d the distance in
    cells from ``previous`` (cell_x, cell_y (h, w): each cell's coordinates) → (n, h, w)."""
    h, w = scores.shape[-2:]
    window = _window_mask(previous.round().long(), (h, w), radius)  # (n, h, w)
    local = scores.masked_fill(~window, float("-inf"))
    if motion_penalty > 0:
        dist2 = (cell_x[None] - previous[:, 0, None, None]) ** 2 + (cell_y[None] - previous[:, 1, None, None]) ** 2  # (n, h, w)
        local = local - motion_penalty * dist2 / max(float(radius), 1.0) ** 2
    return local


@torch.no_grad()
def track_points(
    desc: torch.Tensor,
    queries: torch.Tensor,
    image_size: Sequence[int],
    track_radius: int = 8,
    cycle_threshold: float = 2.0,
    min_similarity: float = 0.5,
    refine_radius: int = 2,
    refine_temperature: float = 0.02,
    reacquire_margin: float = 0.1,
    motion_penalty: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Track query points through the video.

    desc (T, D, h, w), or a :class:`~hyperfeat.video.stream.DescriptorStore` read one frame at a
    time; queries (N, 3) (t, x, y) in pixels of an ``image_size`` (W, H) frame.
    Each query's descriptor (bilinear sample at the query) is matched in every frame, going
    forward and backward from the query frame: the best cell within ``track_radius`` cells of
    the previous position, unless the global nearest neighbour beats it by more than
    ``reacquire_margin`` in cosine similarity (with ``motion_penalty`` > 0 the local choice
    maximises similarity − ``motion_penalty`` · (d / ``track_radius``)², d the distance in cells
    from the previous position: a motion prior, so that a point whose appearance changed and
    that no window cell resembles stays where it was instead of jumping to a look-alike); then a sub-cell soft-argmax (softmax(sim /
    ``refine_temperature``) over ``refine_radius`` cells around it). A position is visible
    when its cosine similarity is ≥ ``min_similarity`` and its cycle — its own descriptor
    matched back into the query frame (global nearest neighbour, soft-argmax) — lands within
    ``cycle_threshold`` cells of the query. At the query frame the track is the query, visible.
    Returns tracks (N, T, 2) xy pixels and visible (N, T) bool.
    """
    from hyperfeat.video.stream import DescriptorStore

    if isinstance(desc, DescriptorStore):  # frames read one at a time (L2-normalised by the store)
        frame_of = desc.__getitem__
        num_frames, _, h, w = desc.shape
        device = desc.device
    else:
        desc = _check_descriptors(desc)
        frame_of = desc.__getitem__
        num_frames, _, h, w = desc.shape
        device = desc.device
    size = _check_image_size(image_size)
    queries, tracks, visible, query_cells, cell_x, cell_y = _start_tracks(queries, num_frames, size, (h, w), device)

    for t_query in queries[:, 0].long().unique().tolist():
        members = (queries[:, 0].long() == t_query).nonzero().flatten()
        start = query_cells[members]  # (n, 2)
        query_desc = frame_of(t_query)  # (D, h, w)
        query_feats = query_desc.flatten(1)  # (D, h·w)
        query_feat = sample_descriptors(query_desc, start)  # (n, D)
        tracks[members, t_query] = start
        visible[members, t_query] = True
        for frames in (range(t_query + 1, num_frames), range(t_query - 1, -1, -1)):
            previous = start
            for t in frames:
                frame = frame_of(t)  # (D, h, w)
                scores = (query_feat @ frame.flatten(1)).view(-1, h, w)  # (n, h, w)
                best_global = _argmax_cell(scores)
                local = _local_scores(scores, previous, int(track_radius), motion_penalty, cell_x, cell_y)
                best_local = _argmax_cell(local)
                s_global = scores.flatten(1).amax(1)
                s_local = local.flatten(1).amax(1)
                chosen = torch.where((s_global > s_local + reacquire_margin)[:, None], best_global, best_local)
                position = _refine(scores, chosen, int(refine_radius), refine_temperature)  # (n, 2)
                # visibility: similarity floor and cycle back to the query frame
                found_feat = sample_descriptors(frame, position)  # (n, D)
                similarity = (found_feat * query_feat).sum(1)
                back = (found_feat @ query_feats).view(-1, h, w)
                back_pos = _refine(back, _argmax_cell(back), int(refine_radius), refine_temperature)
                cycle_ok = (back_pos - start).norm(dim=1) <= cycle_threshold
                tracks[members, t] = position
                visible[members, t] = cycle_ok & (similarity >= min_similarity)
                previous = position
    return _finish_tracks(tracks, visible, queries, size, (h, w))


def standardise_frames(desc: torch.Tensor) -> torch.Tensor:
    """desc (T, D, h, w) → (T, D, h, w): each frame's channels centred and scaled to unit standard
    deviation over its cells, then L2-normalised over D.

    A change that hits the whole frame — lighting, exposure, white balance — moves every cell's
    descriptor the same way; cosines between frames then read it as an appearance change of every
    point. After this per-frame, per-channel standardisation a per-channel gain and offset
    common to the frame cancels exactly, so a tracker on these descriptors follows points
    through such changes (what the state-change analysis needs: the global change is not the
    subject, :mod:`hyperfeat.correspond.changes` normalises it against reference points)."""
    desc = desc.float()
    mean = desc.mean(dim=(2, 3), keepdim=True)  # (T, D, 1, 1)
    std = desc.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return torch.nn.functional.normalize((desc - mean) / std, dim=1)


@torch.no_grad()
def track_appearance(
    desc: torch.Tensor,
    queries: torch.Tensor,
    image_size: Sequence[int],
    track_radius: int = 8,
    template_update: float = 0.5,
    motion_penalty: float = 1.0,
    cycle_threshold: float = 2.0,
    refine_radius: int = 2,
    refine_temperature: float = 0.02,
    velocity: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Track points whose appearance may change (the state-change analysis' ``tracker: appearance``).

    :func:`track_points` matches the query's own descriptor in every frame, so a point that
    changes (painted, cut, re-textured) no longer resembles its query and is lost or called
    occluded — exactly where the analysis must read it. Here each step's template mixes the
    query with the point's appearance in the frame before, ``(1 − template_update) · query +
    template_update · previous``; the local search (``track_radius`` cells, motion prior
    ``motion_penalty``, no global jump) keeps a point near where it was in the frame of an abrupt
    change, and from the next frame on the template carries its new appearance. With
    ``velocity`` v > 0 the search is centred on a prediction, the previous position plus v times
    the last step (constant velocity at v = 1), so that in the frame of the change — where
    appearance says nothing — a moving point keeps moving instead of stopping. A position is
    visible when its frame-to-frame cycle closes: its descriptor, searched back in the previous
    frame within ``track_radius`` cells (without the motion prior, which would close any cycle), lands within ``cycle_threshold`` cells of the previous position (an abrupt
    change breaks the cycle in its own frame only; the analysis bridges one frame).

    desc (T, D, h, w) (e.g. :func:`standardise_frames`), queries (N, 3) (t, x, y) in pixels of an
    ``image_size`` (W, H) frame; tracked forward and backward from each query frame.
    Returns tracks (N, T, 2) xy pixels and visible (N, T) bool.
    """
    desc = _check_descriptors(desc)
    num_frames, _, h, w = desc.shape
    size = _check_image_size(image_size)
    if not 0.0 <= float(template_update) <= 1.0:
        raise DataError(f"template_update must be in [0, 1]; got {template_update}")
    device = desc.device
    queries, tracks, visible, query_cells, cell_x, cell_y = _start_tracks(queries, num_frames, size, (h, w), device)
    radius, update = int(track_radius), float(template_update)
    for t_query in queries[:, 0].long().unique().tolist():
        members = (queries[:, 0].long() == t_query).nonzero().flatten()
        start = query_cells[members]  # (n, 2)
        query_feat = sample_descriptors(desc[t_query], start)  # (n, D)
        tracks[members, t_query] = start
        visible[members, t_query] = True
        for step in (1, -1):
            previous, previous_feat, t_prev = start, query_feat, t_query
            last_step = torch.zeros_like(start)  # (n, 2) cells
            for t in range(t_query + step, num_frames if step > 0 else -1, step):
                template = torch.nn.functional.normalize((1 - update) * query_feat + update * previous_feat, dim=1)
                scores = (template @ desc[t].flatten(1)).view(-1, h, w)  # (n, h, w)
                predicted = previous + float(velocity) * last_step
                predicted = torch.stack([predicted[:, 0].clamp(0, w - 1), predicted[:, 1].clamp(0, h - 1)], dim=1)
                local = _local_scores(scores, predicted, radius, motion_penalty, cell_x, cell_y)
                position = _refine(scores, _argmax_cell(local), int(refine_radius), refine_temperature)  # (n, 2)
                found_feat = sample_descriptors(desc[t], position)  # (n, D)
                back = (found_feat @ desc[t_prev].flatten(1)).view(-1, h, w)  # (n, h, w)
                back_local = _local_scores(back, position, radius, 0.0, cell_x, cell_y)  # no prior: an honest cycle
                back_pos = _refine(back, _argmax_cell(back_local), int(refine_radius), refine_temperature)
                tracks[members, t] = position
                visible[members, t] = (back_pos - previous).norm(dim=1) <= cycle_threshold
                last_step = position - previous
                previous, previous_feat, t_prev = position, found_feat, t
    return _finish_tracks(tracks, visible, queries, size, (h, w))
