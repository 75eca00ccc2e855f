"""The frozen model and the trainable part: the diffusers backbone (:mod:`.backbone`, and the
tiny offline model of :mod:`.tiny`), the plan of UNet calls (:mod:`.schedule`), the hooked
decoder maps (:mod:`.features`), the aggregation network (:mod:`.aggregation`), identities
that caches key on (:mod:`.identity`), checkpoints (:mod:`.checkpoint`) and the import of
published weights (:mod:`.convert`).
"""
