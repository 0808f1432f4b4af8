"""DPO on the toy world, short: a briefly supervised model learns to prefer correct answers on held-out rows. The
full-size run (`examples/dpo_toy_world.py`) reports the hallucination rate too; on these short runs DPO does not
lower it (the model's wrong answers come from what its frozen vision side can tell apart, which adapters on the
language model cannot change), so only its definition is tested here."""

import pytest

from modeling_xgenmm.toy_world.dpo import ToyWorldDPOSettings, run_toy_world_dpo
from modeling_xgenmm.toy_world.evaluation import hallucination_rates
from modeling_xgenmm.toy_world.recipe import ToyWorldSettings, run_toy_world


def test_hallucination_rate_counts_wrong_answers_and_absent_attributes(monkeypatch):
    rows = [
        {"kind": "color", "answer": "red"},
        {"kind": "color", "answer": "red"},
        {"kind": "shape", "answer": "circle"},
        {"kind": "count", "answer": "two"},
    ]
    answers = ["red", "blue", "a circle", "zero"]  # right; absent colour; wrong form; not a count (1-4) of the world
    monkeypatch.setattr("modeling_xgenmm.toy_world.evaluation.greedy_answers", lambda model, processor, rows: answers)
    assert hallucination_rates(None, None, rows) == {"hallucination_rate": 0.75, "absent_attribute_rate": 0.25}


@pytest.mark.slow
def test_dpo_lifts_held_out_preference_accuracy(tmp_path):
    sft = ToyWorldSettings(
        pretrain_steps=150, sft_steps=250, sft_batch_size=16, warmup_steps=20, pair_fraction=0.5, eval_rows=3
    )
    run_toy_world(tmp_path / "sft", sft)
    settings = ToyWorldDPOSettings(steps=60, learning_rate=5e-4, eval_rows=60)
    metrics = run_toy_world_dpo(tmp_path / "sft" / "model", tmp_path / "dpo", settings)
    # 60 held-out rows: 0.05 is three more rows where the correct answer outscores the hallucinated one. Measured
    # lifts from this SFT setting: 0.78 -> 0.87 (the test's single thread), 0.67 -> 0.85 (two threads, another
    # trajectory); the greedy answers name absent attributes less often as well.
    before, after = metrics["before"], metrics["after"]
    assert after["preference_accuracy"] >= before["preference_accuracy"] + 0.05, metrics
    assert after["hallucination_rate"] <= before["hallucination_rate"], metrics
    assert (tmp_path / "dpo" / "model" / "model.safetensors").is_file()
