"""SFT through TRL's `SFTTrainer`: TRL's own vision collator builds assistant-only labels equal to ours, the model
receives `image_sizes` (TRL #2403), and training follows the same loss curve as `transformers.Trainer`."""

import pytest
import torch

from modeling_xgenmm.train import (
    XGenMMDataCollator,
    XGenMMSFTConfig,
    build_trl_sft_trainer,
    load_model_and_processor,
    lora_config,
    train_stage,
)
from modeling_xgenmm.train.sft import trl_conversation_row
from paths import TINY_RANDOM
from training_helpers import (
    LANGUAGE_MODEL_LINEAR_LAYERS,
    LossRecorder,
    multi_image_rows,
    sft_rows,
    tiny_args,
)


def sft_config(output_dir, **overrides) -> XGenMMSFTConfig:
    # The same settings as `tiny_args` of the Trainer tests, so that both trainers see the same batches.
    shared = ("max_steps", "per_device_train_batch_size", "learning_rate", "logging_steps", "seed", "save_strategy")
    settings = {key: value for key, value in tiny_args(output_dir).to_dict().items() if key in shared}
    return XGenMMSFTConfig(
        output_dir=str(output_dir), report_to="none", disable_tqdm=True, **{**settings, **overrides}
    )


def test_policy_defaults_of_the_sft_config(tmp_path):
    config = XGenMMSFTConfig(output_dir=str(tmp_path), report_to="none")
    assert config.assistant_only_loss is True and config.max_length == 2048
    assert config.bf16 is False  # TRL would turn bf16 on; here there is no CUDA
    assert config.activation_checkpointing is True and config.gradient_checkpointing is True  # mirrored alias


def test_trl_collator_labels_are_the_assistant_tokens_and_equal_ours(image_paths, tmp_path):
    model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
    rows = sft_rows(image_paths, 4) + multi_image_rows(image_paths, 2)
    trainer = build_trl_sft_trainer(model, processor, rows, sft_config(tmp_path))
    assert type(trainer.data_collator).__name__ == "DataCollatorForVisionLanguageModeling"
    trl_batch = trainer.data_collator([trainer.train_dataset[index] for index in range(len(rows))])
    ours = XGenMMDataCollator(processor)(rows)
    assert set(trl_batch) == set(ours)
    for key in ours:
        assert torch.equal(trl_batch[key], ours[key]), key
    targets = [processor.decode(labels[labels != -100]) for labels in trl_batch["labels"]]
    assert targets[0] == "It is red.<|end|>" and targets[1] == "It is green.<|end|>"
    assert targets[4] == "The red one.<|end|>It is blue.<|end|>"


def test_sft_trainer_forwards_image_sizes_and_follows_the_trainer_loss_curve(image_paths, tmp_path):
    rows = sft_rows(image_paths, 16)
    model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
    seen = []
    model.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("image_sizes")), with_kwargs=True
    )
    recorder = LossRecorder()
    trainer = build_trl_sft_trainer(model, processor, rows, sft_config(tmp_path / "trl", max_steps=4))
    trainer.add_callback(recorder)
    trainer.train()
    assert len(seen) == 4 and all(sizes is not None and sizes.shape == (4, 2) for sizes in seen)

    model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
    reference = LossRecorder()
    train_stage(model, processor, rows, "sft", tiny_args(tmp_path / "trainer", max_steps=4), callbacks=[reference])
    assert list(recorder.losses) == [1, 2, 3, 4]
    for step, loss in recorder.losses.items():
        assert loss == pytest.approx(reference.losses[step], rel=1e-5)
    assert recorder.losses[4] < recorder.losses[1]


def test_sft_trainer_with_lora_adapts_the_language_model_only(image_paths, tmp_path):
    model, processor = load_model_and_processor(TINY_RANDOM, seed=0)
    trainer = build_trl_sft_trainer(
        model, processor, sft_rows(image_paths, 4), sft_config(tmp_path), peft_config=lora_config(model)
    )
    adapted = {
        name.removeprefix("base_model.model.").removesuffix(".lora_A")
        for name, _ in trainer.model.named_modules()
        if name.endswith(".lora_A")
    }
    assert adapted == LANGUAGE_MODEL_LINEAR_LAYERS


def test_only_conversations_go_to_the_sft_trainer(image_paths):
    assert trl_conversation_row({"conversations": [{"from": "gpt", "value": "Hi <image>"}], "image": "a.png"}) == {
        "messages": [{"role": "assistant", "content": [{"type": "text", "text": "Hi "}, {"type": "image"}]}],
        "images": ["a.png"],
    }
    with pytest.raises(ValueError, match=r"SFT takes conversation rows, got a caption row"):
        trl_conversation_row({"image": image_paths[0], "caption": "A caption."})
