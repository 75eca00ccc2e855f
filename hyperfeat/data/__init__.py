"""Data sets in their release layouts: image pairs with keypoints (:mod:`.pairs`: SPair-71k,
CUB-200-2011, PF-WILLOW, synthetic warps) and videos with masks, joints or tracks
(:mod:`.videos`: DAVIS-2017, JHMDB, TAP-Vid-DAVIS).
"""
