"""GRPO as a recipe stage on the toy world: the reward is the held-out evaluation's own exact match, the prompts are
TRL's conversational format with their pictures per sample, and a weak SFT model improves on held-out questions."""

import pytest

from modeling_xgenmm.toy_world.grpo import (
    ToyWorldGRPOSettings,
    exact_match_reward,
    prompt_rows,
    run_toy_world_grpo,
)
from modeling_xgenmm.toy_world.recipe import ToyWorldSettings, run_toy_world


def test_reward_is_exact_match_after_the_evaluations_normalisation():
    # Stripped, a final full stop dropped, lower case; nothing else is forgiven.
    completions = ["Red.", " red", "a red one", "Blue", "first", "red!"]
    expected = ["red", "red", "red", "red", "first", "red"]
    rewards = exact_match_reward([[{"role": "assistant", "content": text}] for text in completions], expected)
    assert rewards == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]


def test_prompts_are_user_turns_with_their_own_pictures():
    rows = prompt_rows(40, ToyWorldGRPOSettings(pair_fraction=0.5))
    assert len(rows) == 40
    counts = {1: 0, 2: 0}
    for row in rows:
        (turn,) = row["prompt"]
        assert turn["role"] == "user"
        placeholders = sum(block["type"] == "image" for block in turn["content"])
        assert placeholders == len(row["images"]) and placeholders in counts
        counts[placeholders] += 1
        assert row["answer"]
    assert counts == {1: 20, 2: 20}


@pytest.mark.slow
def test_grpo_raises_the_exact_match_reward_of_a_toy_world_sft_model(tmp_path):
    run_toy_world(tmp_path / "sft", ToyWorldSettings(pretrain_steps=150, sft_steps=500, eval_rows=3))
    settings = ToyWorldGRPOSettings(steps=300, learning_rate=5e-5, temperature=1.0, eval_rows=30)
    metrics = run_toy_world_grpo(tmp_path / "sft" / "model", tmp_path / "grpo", settings)
    assert set(metrics["before"]) == set(metrics["after"]) >= {"single_image", "two_image", "sampled_single_image"}
    rewards = [entry["reward"] for entry in metrics["log_history"] if "reward" in entry]
    assert len(rewards) == 10, rewards
    # What GRPO optimizes, on its own training prompts: the sampled answers' exact match rises. Logged rewards are
    # noisy (32 completions a step), so the halves are compared: +0.046 for this run here, +0.05 to +0.08 in five
    # 300-step runs at these or larger learning rates from a stronger SFT model.
    first, last = sum(rewards[:5]) / 5, sum(rewards[5:]) / 5
    assert last >= first + 0.02, rewards
    assert (tmp_path / "grpo" / "model" / "model.safetensors").is_file()
