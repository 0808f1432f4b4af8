"""bf16 inference: the recorded cases generated with bf16 weights give fp32's greedy ids wherever fp32's choice is
clear of bf16's error.

The rule: at generation step i of a row, bf16 can only pick another token than fp32 when fp32's top-1/top-2 logit
margin is at most twice the largest difference between the two models' logits at that position, `delta_i`, measured
by a teacher-forced forward of both models over fp32's sequence (either logit of the pair can move by `delta_i`). The
steps before a row's first step with `margin_i <= 2 * delta_i` must give identical ids; from that step on the row is
not compared (its prefix may differ from fp32's)."""

import pytest
import torch

from modeling_xgenmm import XGenMMForConditionalGeneration
from modeling_xgenmm.compat_xgenmm import CACHE_ARG, get_cache
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


def greedy(model, inputs: dict, images: dict, kwargs: dict) -> torch.Tensor:
    kwargs = {key: value for key, value in kwargs.items() if key not in ("repetition_penalty", "do_sample")}
    images = {key: value.to(model.dtype) if key == "pixel_values" else value for key, value in images.items()}
    output = model.generate(**inputs, **images, **kwargs, do_sample=False)
    return output[:, inputs["input_ids"].shape[1] :]


def step_logits(model, inputs: dict, images: dict, new_ids: torch.Tensor) -> torch.Tensor:
    """Logits `(batch, steps, vocab)` that choose each of `new_ids`, teacher-forced as `generate` runs: the prompt with
    its images, then `new_ids` read from the cache (a generated id is text, whatever its value), positions counted over
    the attention mask (left padding)."""
    images = {key: value.to(model.dtype) if key == "pixel_values" else value for key, value in images.items()}
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(new_ids)], 1)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    prompt = inputs["input_ids"].shape[1]
    with torch.no_grad():
        first = model(**inputs, **images, position_ids=positions[:, :prompt], use_cache=True)
        rest = model(
            input_ids=new_ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, prompt:-1],
            **{CACHE_ARG: get_cache(first)},
        )  # fmt: skip
    return torch.cat([first.logits[:, -1:], rest.logits], 1).float()


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
        top2 = logits32.topk(2, dim=-1).values
        margin = top2[..., 0] - top2[..., 1]
        delta = (logits16 - logits32).abs().amax(-1)
        # bf16 is a real approximation: its logits differ from fp32's by far more than float32 rounding
        assert delta.min() > 1e-3, (case_name, delta)
        eos = kwargs["eos_token_id"] if isinstance(kwargs["eos_token_id"], list) else [kwargs["eos_token_id"]]
        for row in range(ids32.shape[0]):
            ended = torch.isin(ids32[row], torch.tensor(eos)).nonzero()
            length = int(ended[0]) + 1 if len(ended) else ids32.shape[1]  # after its end a row holds padding
            # the teacher-forced fp32 logits are those generate chose from
            assert logits32[row, :length].argmax(-1).tolist() == ids32[row, :length].tolist(), case_name
            unclear = (margin[row, :length] <= 2 * delta[row, :length]).nonzero()
            steps = int(unclear[0]) if len(unclear) else length
            assert ids16[row, :steps].tolist() == ids32[row, :steps].tolist(), (case_name, row, margin, delta)
            compared[case_name, row] = steps
            steps_in_all += length
    # not vacuous: random tiny weights have small margins, so some rows end at their first step, but not all
    assert sum(compared.values()) > 0, (compared, steps_in_all)
