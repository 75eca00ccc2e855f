"""The aggregation network against a functional re-implementation of docs/ARCHITECTURE.md."""

import torch

from hyperfeat.model.aggregation import AggregationNetwork, StreamingAggregator
from tests.reference import functional_aggregation, functional_block

DIMS = [64, 32, 48]
S, D = 2, 128


def randomise(net: AggregationNetwork, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_structure_and_init():
    net = AggregationNetwork(DIMS, S, D)
    params = dict(net.named_parameters())
    assert all("bias" not in k or ".norm." in k for k in params), "convs must have no bias"
    block = net.bottleneck_layers[0][0]
    assert block.conv1.weight.shape == (D // 4, 64, 1, 1)
    assert block.conv2.weight.shape == (D // 4, D // 4, 3, 3)
    assert block.conv3.weight.shape == (D, D // 4, 1, 1)
    assert block.shortcut.weight.shape == (D, 64, 1, 1)
    assert block.conv1.norm.num_groups == 32
    assert torch.equal(net.mixing_weights, torch.ones(S * len(DIMS)))
    assert len(net.bottleneck_layers) == len(DIMS), "one block per layer, shared over timesteps"


def test_forward_matches_functional_sum_timestep_major():
    net = AggregationNetwork(DIMS, S, D)
    params = randomise(net)
    raw = torch.randn(2, S, sum(DIMS), 6, 6)
    expected = functional_aggregation(params, DIMS, raw)
    out = net(raw)
    assert out.shape == (2, D, 6, 6)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net(raw.flatten(1, 2)), out)


def test_mixing_weight_index_is_timestep_major():
    net = AggregationNetwork(DIMS, S, D)
    params = randomise(net)
    with torch.no_grad():
        net.mixing_weights.fill_(-50.0)
        net.mixing_weights[1 * len(DIMS) + 2] = 50.0  # timestep 1, layer 2
    raw = torch.randn(1, S, sum(DIMS), 5, 5)
    expected = functional_block(params, "bottleneck_layers.2.0", raw[:, 1, 64 + 32 :])
    torch.testing.assert_close(net(raw), expected, rtol=1e-4, atol=1e-5)


def test_streaming_equals_store_all_in_any_order():
    net = AggregationNetwork(DIMS, S, D)
    randomise(net, 1)
    raw = torch.randn(2, S, sum(DIMS), 4, 4)
    acc = StreamingAggregator(net)
    offsets = [0, 64, 96]
    for s in reversed(range(S)):
        for l in reversed(range(len(DIMS))):
            acc.add(s, l, raw[:, s, offsets[l] : offsets[l] + DIMS[l]])
    torch.testing.assert_close(acc.result(), net(raw), rtol=1e-5, atol=1e-5)


def test_wrong_channel_count_is_a_clear_error():
    net = AggregationNetwork(DIMS, S, D)
    try:
        net(torch.randn(1, S, sum(DIMS) + 1, 4, 4))
    except ValueError as err:
        assert "expects" in str(err) and str(S * sum(DIMS)) in str(err)
    else:
        raise AssertionError("no error")
