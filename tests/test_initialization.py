"""Weights missing from a checkpoint are initialised as in a model built from its config: `from_pretrained` builds on
the meta device and materialises every missing parameter and buffer through the sub-models' `_init_weights`
(vision tower of any backbone, resampler, language model, head); accelerate's big-model loading does the same."""

import copy
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, set_seed

from modeling_xgenmm import XGenMMConfig, XGenMMForConditionalGeneration
from paths import HUB_CONFIGS, TINY_RANDOM


pytestmark = pytest.mark.core

RELEASED = ["xgen-mm-phi3-mini-instruct-singleimg-r-v1.5", "xgen-mm-phi3-mini-base-r-v1.5"]


@pytest.fixture
def seeded_initialisation(monkeypatch):
    """The same random draws for a module however it is reached: a seed before each module's initialisation."""
    initialise = PreTrainedModel._initialize_weights

    def seeded(self, module, *args, **kwargs):
        set_seed(0)
        return initialise(self, module, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "_initialize_weights", seeded)


def built_and_materialised(config: XGenMMConfig) -> tuple[dict, PreTrainedModel]:
    """The state of a model built from its config, and a model built on the meta device and materialised from no
    weights at all (every key missing), as `from_pretrained` does for the keys a checkpoint lacks; both float32 (the
    released configs say bfloat16, which `from_pretrained` would take)."""
    built = XGenMMForConditionalGeneration(copy.deepcopy(config)).state_dict()
    materialised = XGenMMForConditionalGeneration.from_pretrained(
        None, config=copy.deepcopy(config), state_dict={}, dtype=torch.float32
    )
    return built, materialised


def assert_materialised_like_built(built: dict, materialised: PreTrainedModel) -> None:
    tensors = dict(materialised.named_parameters()) | dict(materialised.named_buffers())
    assert not [name for name, tensor in tensors.items() if tensor.device.type == "meta"]
    state = materialised.state_dict()
    assert state.keys() == built.keys()
    differing = [name for name in built if not torch.equal(built[name], state[name])]
    assert not differing, differing


def shrunk(name: str) -> XGenMMConfig:
    """A released config at its widths, one layer deep everywhere (a full-size model twice does not fit here)."""
    config = XGenMMConfig.from_pretrained(HUB_CONFIGS / name)
    config.vision_config.num_hidden_layers = config.text_config.num_hidden_layers = config.perceiver_config.depth = 1
    return config


@pytest.mark.parametrize("anyres", [True, False], ids=["any-resolution", "base"])
def test_every_weight_materialised_from_meta_is_initialised_as_from_the_config(seeded_initialisation, anyres):
    config = XGenMMConfig.from_pretrained(TINY_RANDOM, anyres=anyres)
    assert_materialised_like_built(*built_and_materialised(config))


def test_a_timm_tower_materialised_from_meta_is_initialised_as_from_the_config(seeded_initialisation):
    config = XGenMMConfig.from_pretrained(HUB_CONFIGS / "toy-world")
    assert config.vision_config.model_type == "timm_wrapper"
    assert_materialised_like_built(*built_and_materialised(config))


@pytest.mark.slow
@pytest.mark.parametrize("name", RELEASED)
def test_the_released_architectures_materialise_from_meta_as_from_the_config(seeded_initialisation, name):
    assert_materialised_like_built(*built_and_materialised(shrunk(name)))


def test_a_checkpoint_missing_a_vision_weight_loads_initialised_and_says_so(seeded_initialisation, tmp_path, caplog):
    config = XGenMMConfig.from_pretrained(TINY_RANDOM)
    model = XGenMMForConditionalGeneration(copy.deepcopy(config))
    model.save_pretrained(tmp_path)
    missing = "model.vision_tower.encoder.layers.0.self_attn.q_proj.weight"
    weights = load_file(tmp_path / "model.safetensors")
    del weights[missing]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})

    with caplog.at_level(logging.WARNING):
        loaded = XGenMMForConditionalGeneration.from_pretrained(tmp_path)
    assert missing in caplog.text and "MISSING" in caplog.text
    state = loaded.state_dict()
    built = XGenMMForConditionalGeneration(copy.deepcopy(config)).state_dict()  # the same seeded draws
    torch.testing.assert_close(state[missing], built[missing], rtol=0, atol=0)
    for name, value in weights.items():
        assert torch.equal(state[name], value), name
