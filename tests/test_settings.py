"""Every settings dataclass is the one home of its defaults: the YAML block it reads states the
same keys and the same values.

``SETTINGS_BLOCKS`` is the table to extend: one row per (dataclass, config block) pair —
``(dataclass, dotted block, key prefix, whole)``. ``prefix`` selects the block's keys that belong
to the dataclass (``train.walk_*``); ``whole`` says those keys are exactly the dataclass's fields
(False: the block also holds keys of other readers, and only the fields are checked).
"""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from hyperfeat.config import load_config
from hyperfeat.correspond.changes import ChangeSettings
from hyperfeat.correspond.track import TRACKERS
from hyperfeat.errors import ConfigError
from hyperfeat.eval.settings import EvalSettings
from hyperfeat.settings import defaults_of, from_block
from hyperfeat.train.module import WalkSettings

SETTINGS_BLOCKS = [
    (WalkSettings, "train", "walk_", True),
    (EvalSettings, "eval", "", True),
    (ChangeSettings, "changes", "", True),
    *[(spec.settings, f"video.trackers.{name}", "", True) for name, spec in TRACKERS.items()],
]


def _plain(value):
    value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return tuple(value) if isinstance(value, list) else value


@pytest.mark.parametrize(
    "cls, block, prefix, whole", SETTINGS_BLOCKS, ids=[f"{row[0].__name__}-{row[1]}" for row in SETTINGS_BLOCKS]
)
def test_yaml_block_states_the_dataclass_defaults(cls, block, prefix, whole):
    node = OmegaConf.select(load_config(), block)
    keys = {k[len(prefix) :] for k in node if k.startswith(prefix)}
    fields = {f.name for f in dataclasses.fields(cls)}
    if whole:
        assert keys == fields, f"{block}: keys {sorted(keys ^ fields)} are in only one of the YAML and {cls.__name__}"
    else:
        assert fields <= keys, f"{block} lacks {sorted(fields - keys)} of {cls.__name__}"
    defaults = defaults_of(cls)
    assert set(defaults) == fields, f"{cls.__name__} fields without a default: {sorted(fields - set(defaults))}"
    wrong = {
        name: (_plain(node[prefix + name]), default)
        for name, default in defaults.items()
        if _plain(node[prefix + name]) != _plain(default)
    }
    assert not wrong, f"{block} (YAML, dataclass) values differ: {wrong}"
    assert from_block(cls, node, prefix) == cls()  # read back: the defaults


def test_a_missing_key_takes_the_dataclass_default_and_a_bad_one_is_one_line():
    assert from_block(WalkSettings, {"walk_pool": 2}, "walk_") == WalkSettings(pool=2)
    cfg = load_config(overrides=["train.walk_pool=3", "eval.alphas=[0.1]"])
    assert WalkSettings.from_config(cfg).pool == 3 and EvalSettings.from_config(cfg).alphas == (0.1,)
    with pytest.raises(ConfigError, match=r"^train.walk_pool must be int; got 'wide'$"):
        from_block(WalkSettings, {"walk_pool": "wide"}, "walk_", where="train")
    with pytest.raises(ConfigError, match=r"^train.walk_across_batch must be true or false; got 'yes'$"):
        from_block(WalkSettings, {"walk_across_batch": "yes"}, "walk_", where="train")
