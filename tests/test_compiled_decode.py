"""Compiled decoding in one argument: a static cache (`cache_implementation="static"`) compiles the decoding forward
with the generation config's compile settings on every device, a CPU included (`compile_everywhere` in
modeling_xgenmm.py); its greedy ids follow the eager path's under the margin rule (`margin_rule.py`) in fp32, bf16 and
int8 on the recorded cases of the original code."""

import pytest
import torch
from torch._dynamo.utils import counters
from transformers import CompileConfig

from margin_rule import compared_steps, greedy_with_logits
from modeling_xgenmm import XGenMMForConditionalGeneration
from modeling_xgenmm.inference import quantization_config
from original_fixtures import build_inputs, case_images, recorded_case, recorded_case_names
from paths import original_fixtures_dir


pytestmark = pytest.mark.core

PRECISIONS = {
    "fp32": {},
    "bf16": {"dtype": torch.bfloat16},
    "int8": {"dtype": torch.bfloat16, "quantization_config": "int8"},
}


@pytest.fixture(autouse=True)
def fresh_compiler():
    """Each test compiles from scratch and counts its own graphs."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def fixtures():
    return original_fixtures_dir()


def load(fixtures, variant: str, precision: str):
    settings = dict(PRECISIONS[precision])
    if "quantization_config" in settings:
        settings["quantization_config"] = quantization_config(settings["quantization_config"])
    return XGenMMForConditionalGeneration.from_pretrained(fixtures / "checkpoints" / variant, **settings).eval()


def case_inputs(fixtures, model, case_name: str) -> tuple[dict, dict, dict]:
    case = recorded_case(fixtures, case_name)
    return (
        build_inputs(case, "gen_", model.config.image_token_id),
        case_images(fixtures, case),
        case.info["gen_kwargs"],
    )


def test_a_static_cache_alone_compiles_decoding_on_a_cpu_in_one_graph(fixtures):
    model = load(fixtures, "instruct", "fp32")
    greedy_with_logits(model, *case_inputs(fixtures, model, "i01_single_grid1x2"), cache_implementation="static")
    assert counters["stats"]["unique_graphs"] >= 1
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_disable_compile_decodes_a_static_cache_uncompiled(fixtures):
    model = load(fixtures, "instruct", "fp32")
    inputs = case_inputs(fixtures, model, "i01_single_grid1x2")
    greedy_with_logits(model, *inputs, cache_implementation="static", disable_compile=True)
    assert counters["stats"]["unique_graphs"] == 0


def test_the_callers_compile_config_is_used_and_left_unchanged(fixtures):
    model = load(fixtures, "instruct", "fp32")
    compile_config = CompileConfig(backend="eager")
    inputs = case_inputs(fixtures, model, "i01_single_grid1x2")
    greedy_with_logits(model, *inputs, cache_implementation="static", compile_config=compile_config)
    assert counters["stats"]["unique_graphs"] >= 1
    assert compile_config._compile_all_devices is None


def compared_with_the_eager_path(fixtures, models: dict, case_names: list[str]) -> dict:
    """Steps compared by the margin rule in each row of each case, the compiled path against the eager one."""
    compared = {}
    for case_name in case_names:
        model = models[recorded_case(fixtures, case_name).variant]
        inputs, images, kwargs = case_inputs(fixtures, model, case_name)
        eager = greedy_with_logits(model, inputs, images, kwargs)
        compiled = greedy_with_logits(model, inputs, images, kwargs, cache_implementation="static")
        for row, steps in enumerate(compared_steps(*eager, *compiled, kwargs["eos_token_id"])):
            compared[case_name, row] = steps
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]
    return compared


def test_compiled_greedy_ids_follow_the_eager_path_under_the_margin_rule_in_a_mixed_batch(fixtures):
    model = load(fixtures, "instruct", "fp32")
    compared = compared_with_the_eager_path(fixtures, {"instruct": model}, ["i08_batch3_mixed"])
    assert sum(compared.values()) > 0, compared


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_compiled_greedy_ids_follow_the_eager_paths_under_the_margin_rule_on_every_recorded_case(fixtures, precision):
    models = {variant: load(fixtures, variant, precision) for variant in ("base", "instruct")}
    compared = compared_with_the_eager_path(fixtures, models, recorded_case_names())
    assert sum(compared.values()) > 0, compared
