"""Pictures by kind: mixing weights (:mod:`.mixing`), correspondences (:mod:`.correspondences`),
tracks (:mod:`.tracks`) and masks (:mod:`.masks`). Drawing only: files are written by the
caller or through :mod:`hyperfeat.io`.
"""
