"""Streaming aggregation equals the store-all path and never keeps more than the map in hand."""

import weakref

import pytest
import torch
from omegaconf import OmegaConf

from hyperfeat.model.aggregation import AggregationNetwork, StreamingAggregator
from hyperfeat.model.features import FeatureExtractor


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 128, 128, generator=g) * 2 - 1  # (B, 3, L, L)


def make(tiny_cfg, tiny_backbone, mode, save_steps):
    features = OmegaConf.merge(tiny_cfg.features, {"mode": mode, "save_steps": save_steps})
    extractor = FeatureExtractor(tiny_backbone, features)
    torch.manual_seed(0)
    network = AggregationNetwork(extractor.channels, len(save_steps), int(tiny_cfg.aggregation.projection_dim))
    with torch.no_grad():  # distinct mixing weights, so that a wrong (timestep, layer) pairing shows
        network.mixing_weights.copy_(torch.linspace(-1, 1, network.mixing_weights.numel()))
    return extractor, network


def streamed(extractor, network, images, consumer_wrapper=None):
    aggregator = StreamingAggregator(network)
    consumer = aggregator.add if consumer_wrapper is None else consumer_wrapper(aggregator.add)
    assert extractor.run(images, consumer=consumer) is None
    return aggregator.result()  # (B, D, R, R)


CASES = [("inversion", [0]), ("inversion", [4, 2, 0]), ("noise", [2]), ("noise", [4, 2, 0])]


@pytest.mark.parametrize("mode, save_steps", CASES)
def test_streaming_equals_store_all(tiny_cfg, tiny_backbone, images, mode, save_steps):
    extractor, network = make(tiny_cfg, tiny_backbone, mode, save_steps)
    with torch.no_grad():
        stored = network(extractor.run(images))  # (B, D, R, R)
        stream = streamed(extractor, network, images)
    assert stream.shape == stored.shape == (2, network.projection_dim) + (int(tiny_cfg.features.output_resolution),) * 2
    torch.testing.assert_close(stream, stored, rtol=1e-5, atol=1e-5)


def test_streaming_gradients_equal_store_all(tiny_cfg, tiny_backbone, images):
    extractor, network = make(tiny_cfg, tiny_backbone, "noise", [4, 2, 0])
    network(extractor.run(images)).square().mean().backward()
    stored = {n: p.grad.clone() for n, p in network.named_parameters()}
    network.zero_grad()
    streamed(extractor, network, images).square().mean().backward()
    for name, param in network.named_parameters():
        torch.testing.assert_close(param.grad, stored[name], rtol=1e-4, atol=1e-6, msg=name)


class LiveMaps:
    """Consumer wrapper that counts, at each call, the maps handed out earlier that are still alive."""

    def __init__(self, keep: bool = False):
        self.refs: list[tuple[int, weakref.ref]] = []
        self.kept: list[torch.Tensor] = []
        self.keep = keep
        self.max_live = 0  # maps alive (the new one included)
        self.max_live_other_layers = 0  # maps of another layer than the new one

    def __call__(self, inner):
        def consumer(timestep: int, layer: int, fmap: torch.Tensor) -> None:
            self.refs = [(lay, ref) for lay, ref in self.refs if ref() is not None]
            self.max_live = max(self.max_live, len(self.refs) + 1)
            self.max_live_other_layers = max(self.max_live_other_layers, sum(lay != layer for lay, _ in self.refs))
            self.refs.append((layer, weakref.ref(fmap)))
            if self.keep:
                self.kept.append(fmap)
            inner(timestep, layer, fmap)

        return consumer


@pytest.mark.parametrize("save_steps", [[0], [4, 2, 0]])
def test_inversion_streaming_holds_one_map(tiny_cfg, tiny_backbone, images, save_steps):
    extractor, network = make(tiny_cfg, tiny_backbone, "inversion", save_steps)
    live = LiveMaps()
    with torch.no_grad():
        streamed(extractor, network, images, live)
    assert live.max_live == 1, "each map must be gone before the next one is made, whatever the timesteps"


def test_noise_streaming_holds_one_layer(tiny_cfg, tiny_backbone, images):
    # noise mode batches all timesteps: a layer's S maps come out of one UNet call together
    extractor, network = make(tiny_cfg, tiny_backbone, "noise", [4, 2, 0])
    live = LiveMaps()
    with torch.no_grad():
        streamed(extractor, network, images, live)
    assert live.max_live_other_layers == 0 and live.max_live <= 3


def test_live_map_counter_sees_kept_maps(tiny_cfg, tiny_backbone, images):
    """The counter works: a consumer that keeps the maps (as store-all does) is caught."""
    extractor, network = make(tiny_cfg, tiny_backbone, "inversion", [4, 2, 0])
    live = LiveMaps(keep=True)
    with torch.no_grad():
        streamed(extractor, network, images, live)
    assert live.max_live == 3 * len(extractor.layers)
