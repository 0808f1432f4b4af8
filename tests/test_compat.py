"""The bridges of `compat_xgenmm.py` (transformers 5.16.1 to the newest 5.x): the installed release's form works, and
the other form is exercised here too, so that both are tested whichever release CI installs (`.ci/run` also runs the
core tests on the lowest release of the range)."""

import dataclasses
import inspect

import pytest
import torch
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast

from modeling_helpers import collate, make_sample, tiny_config, tiny_model
from modeling_xgenmm import compat_xgenmm
from modeling_xgenmm.compat_xgenmm import (
    CACHE_ARG,
    MultimodalCausalLMOutputWithPast,
    get_cache,
    slice_logits_to_keep,
    takes_cache_argument,
)


pytestmark = pytest.mark.core

SMALL = (30, 60)


def test_the_cache_name_is_the_installed_releases():
    assert CACHE_ARG in {field.name for field in dataclasses.fields(BaseModelOutputWithPast)}
    assert CACHE_ARG in {field.name for field in dataclasses.fields(MultimodalCausalLMOutputWithPast)}


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_forward_takes_the_cache_under_either_name_and_returns_it_under_the_releases(name):
    model = tiny_model(seed=0)
    batch = collate(tiny_config(), [make_sample(tiny_config(), [SMALL], seed=1)])
    with torch.no_grad():
        full = model(**batch).logits
        prefix = model(**{**batch, "input_ids": batch["input_ids"][:, :-1],
                          "attention_mask": batch["attention_mask"][:, :-1]}, use_cache=True)  # fmt: skip
        cache = get_cache(prefix)
        assert isinstance(cache, DynamicCache) and cache.get_seq_length() == batch["input_ids"].shape[1] - 1
        last = model(input_ids=batch["input_ids"][:, -1:], attention_mask=batch["attention_mask"], **{name: cache})
    torch.testing.assert_close(last.logits[:, -1], full[:, -1], rtol=1e-5, atol=1e-5)


def test_older_releases_pass_past_key_values_and_see_it_in_the_signature(monkeypatch):
    """The form taken where transformers still calls the cache `past_key_values` (< 5.24)."""
    monkeypatch.setattr(compat_xgenmm, "CACHE_ARG", "past_key_values")

    def forward(self, input_ids=None, cache=None, **kwargs):
        return cache

    wrapped = takes_cache_argument(forward)
    assert "past_key_values" in inspect.signature(wrapped).parameters
    assert "cache" not in inspect.signature(wrapped).parameters
    assert wrapped(None, past_key_values="the cache") == "the cache"
    assert wrapped(None, cache="the cache") == "the cache"


def test_logits_to_keep_slices_the_last_positions_or_the_given_ones():
    hidden = torch.arange(2 * 5 * 3).view(2, 5, 3)
    assert torch.equal(slice_logits_to_keep(hidden, 0), hidden)
    assert torch.equal(slice_logits_to_keep(hidden, 2), hidden[:, -2:])
    assert torch.equal(slice_logits_to_keep(hidden, torch.tensor([0, 3])), hidden[:, [0, 3]])
