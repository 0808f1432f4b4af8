"""bf16 inference: the recorded cases generated with bf16 weights give fp32's greedy ids wherever fp32's choice is
clear of bf16's error, by the margin rule (`margin_rule.py`), with bf16's logits teacher-forced on fp32's sequence."""

import pytest
import torch

from margin_rule import compared_steps, greedy, step_logits
from modeling_xgenmm import XGenMMForConditionalGeneration
from original_fixtures import build_inputs, case_images, recorded_case, recorded_case_names
from paths import original_fixtures_dir


pytestmark = pytest.mark.core


@pytest.fixture(scope="module")
def fixtures():
    return original_fixtures_dir()


@pytest.fixture(scope="module")
def models(fixtures):
    """(fp32, bf16) of each variant, loaded directly from the original checkpoints."""
    return {
        variant: tuple(
            XGenMMForConditionalGeneration.from_pretrained(fixtures / "checkpoints" / variant, dtype=dtype).eval()
            for dtype in (torch.float32, torch.bfloat16)
        )
        for variant in ("base", "instruct")
    }


def test_bf16_greedy_ids_equal_fp32_where_the_margin_exceeds_bf16_error(fixtures, models):
    compared, steps_in_all = {}, 0
    for case_name in recorded_case_names():
        case = recorded_case(fixtures, case_name)
        fp32, bf16 = models[case.variant]
        inputs = build_inputs(case, "gen_", fp32.config.image_token_id)
        images = case_images(fixtures, case)
        kwargs = case.info["gen_kwargs"]
        ids32, ids16 = greedy(fp32, inputs, images, kwargs), greedy(bf16, inputs, images, kwargs)
        logits32 = step_logits(fp32, inputs, images, ids32)
        logits16 = step_logits(bf16, inputs, images, ids32)
        # bf16 is a real approximation: its logits differ from fp32's by far more than float32 rounding
        delta = (logits16 - logits32).abs().amax(-1)
        assert delta.min() > 1e-3, (case_name, delta)
        for row, steps in enumerate(compared_steps(ids32, logits32, ids16, logits16, kwargs["eos_token_id"])):
            compared[case_name, row] = steps
        steps_in_all += ids32.numel()
    # not vacuous: random tiny weights have small margins, so some rows end at their first step, but not all
    assert sum(compared.values()) > 0, (compared, steps_in_all)
