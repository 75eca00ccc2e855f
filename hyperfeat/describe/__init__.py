"""Describers: images or frames → dense descriptors (B, D, h, w).

:class:`~hyperfeat.describe.base.Describer` is the interface every consumer takes;
:class:`~hyperfeat.describe.hyperfeatures.HyperfeatureDescriber` is the trained diffusion
hyperfeature. Other methods (raw decoder maps, DIFT, ...) plug in as further subclasses.
"""
