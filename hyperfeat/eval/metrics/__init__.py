"""Metrics per task family (torchmetrics, so they gather across DDP ranks): PCK for keypoints
(:mod:`.pck`), J&F for masks (:mod:`.jandf`), TAP-Vid's AJ / δ_avg / OA for tracks (:mod:`.tapvid`).
"""
