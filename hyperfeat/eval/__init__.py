"""Evaluation: one runner (:mod:`.runner`) with a loop per benchmark (semantic PCK, DAVIS J&F,
JHMDB PCK, TAP-Vid), the metrics per family (:mod:`.metrics`) and one table formatter
(:mod:`.table`).
"""
