"""Training the aggregation network: the LightningModule (:mod:`.module`, given its parts), the
pair data module (:mod:`.datamodule`), the correspondence loss (:mod:`.losses`), the raw-feature
cache (:mod:`.cache`) and the Trainer assembly (:mod:`.trainer`).
"""
