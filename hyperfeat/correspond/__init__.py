"""Correspondence from descriptors: matching points between two images (:mod:`.matching`),
propagating labels and keypoints along a video (:mod:`.propagation`) and tracking points
(:mod:`.tracking`). Everything here takes descriptor tensors (B or T, D, h, w) and points in
pixels (:mod:`hyperfeat.geometry`); nothing here knows which describer made them.
"""
