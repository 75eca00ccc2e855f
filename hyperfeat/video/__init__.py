"""Videos: reading frames (:mod:`.frames`), keeping their descriptors (:mod:`.store`) and running
the video tasks over any describer (:mod:`.run`).
"""
