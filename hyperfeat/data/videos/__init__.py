"""Video data sets in their release layouts: DAVIS-2017 (object masks), JHMDB (15 joints per
frame) and TAP-Vid-DAVIS (point tracks with occlusion flags); each has a ``*_from_config``
constructor reading the ``data`` block.
"""
