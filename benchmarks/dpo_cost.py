# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Time of one DPO training step (forward + backward) relative to one SFT step on the same rows: TRL's `DPOTrainer`
as it is, and `XGenMMDPOTrainer` with and without shared image features. The SFT step trains on each row's prompt
and chosen answer (`transformers.Trainer` + `XGenMMDataCollator`); every trainer gets the same model (seeded random
weights of `--config`), the same trainable weights (LoRA on the language model, or with `--full` the language model
while the vision tower and resampler stay frozen) and the same batch of toy-world preference rows. Each step is
timed `--repeats` times after a warm-up; the median counts.

    python -m benchmarks.dpo_cost [--config hub_configs/toy-world] [--batch_size 8] [--repeats 15] [--full]
"""

import argparse
import copy
import statistics
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from trl import DPOConfig, DPOTrainer

from modeling_xgenmm.toy_world.data import ToyWorldRows, preference_row
from modeling_xgenmm.train.arguments import XGenMMDPOConfig, XGenMMTrainingArguments
from modeling_xgenmm.train.dpo import build_dpo_trainer, preference_dataset
from modeling_xgenmm.train.freezing import freeze_resampler, freeze_vision_tower
from modeling_xgenmm.train.loading import load_model_and_processor
from modeling_xgenmm.train.lora import lora_config
from modeling_xgenmm.train.sft import build_trainer


REPO_ROOT = Path(__file__).resolve().parents[1]
COMMON = {"report_to": "none", "disable_tqdm": True, "save_strategy": "no", "seed": 0}


def toy_preference_rows(count: int) -> list[dict]:
    """The first `count` toy-world preference rows (seed 7): images, prompt, chosen and rejected answers."""
    split = ToyWorldRows(preference_row, count, seed=7)
    return [split[index] for index in range(count)]


def sft_row(row: dict) -> dict:
    return {"messages": row["prompt"] + row["chosen"], "images": row["images"]}


def step_times(
    trainer, batch: dict, repeats: int, first_step: AbstractContextManager | None = None
) -> tuple[list[float], int]:
    """Seconds of `repeats` training steps on `batch` after an untimed first step (run inside `first_step`, e.g. a
    memory measurement), and the image views the vision towers (policy and reference) encode in one step."""
    model = trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this bypasses
    views, hooks = [], []
    for module in (model, getattr(trainer, "ref_model", None)):
        if module is None:
            continue
        module = trainer.accelerator.unwrap_model(module)
        module = module.get_base_model() if hasattr(module, "get_base_model") else module
        hooks.append(
            module.model.vision_tower.register_forward_pre_hook(
                lambda tower, args, kwargs: views.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
            )
        )
    with first_step or nullcontext():
        trainer.training_step(model, batch)  # warm-up, and the view count
    for hook in hooks:
        hook.remove()
    times = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        trainer.training_step(model, batch)
        times.append(time.perf_counter() - start)
    return times, sum(views)


def sft_trainer_and_batch(model, processor, rows: list[dict], output_dir: str, lora: bool) -> tuple:
    """`transformers.Trainer` + `XGenMMDataCollator` training on each row's prompt and chosen answer, and the batch of
    all `rows` it collates, on the trainer's device."""
    args = XGenMMTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=len(rows), activation_checkpointing=False, **COMMON
    )
    peft_config = lora_config(model) if lora else None
    trainer = build_trainer(model, processor, [sft_row(row) for row in rows], "sft", args, peft_config=peft_config)
    return trainer, trainer._prepare_inputs(trainer.data_collator([sft_row(row) for row in rows]))


def xgenmm_dpo_trainer_and_batch(
    model, processor, rows: list[dict], output_dir: str, lora: bool, share: bool
) -> tuple:
    """`XGenMMDPOTrainer` (with or without shared image features) and the batch of all `rows` it collates."""
    args = XGenMMDPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=len(rows),
        share_image_features=share,
        activation_checkpointing=False,
        **COMMON,
    )
    trainer = build_dpo_trainer(model, processor, rows, args, peft_config=lora_config(model) if lora else None)
    return trainer, trainer._prepare_inputs(trainer.data_collator(rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "hub_configs" / "toy-world"))
    parser.add_argument("--batch_size", type=int, default=8, help="preference rows per step")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="full DPO of the language model instead of LoRA")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = toy_preference_rows(args.batch_size)
    output_dir = tempfile.mkdtemp()

    def fresh_model():
        model, processor = load_model_and_processor(args.config, seed=0)
        # Only the language model trains, as in every trainer here.
        freeze_vision_tower(model)
        freeze_resampler(model)
        return model, processor

    results = []
    trainer, batch = sft_trainer_and_batch(*fresh_model(), rows, output_dir, lora=not args.full)
    results.append(("SFT (Trainer, XGenMMDataCollator)", *step_times(trainer, batch, args.repeats)))

    model, processor = fresh_model()
    trl_args = DPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        bf16=False,
        activation_checkpointing=False,
        **COMMON,
    )
    trainer = DPOTrainer(
        model,
        ref_model=None if not args.full else copy.deepcopy(model),
        args=trl_args,
        train_dataset=preference_dataset(rows, processor.image_token),
        processing_class=processor,
        peft_config=None if args.full else lora_config(model),
    )
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))]))
    results.append(("DPO, TRL DPOTrainer (TRL collator)", *step_times(trainer, batch, args.repeats)))

    for share, name in ((False, "DPO, XGenMMDPOTrainer, TRL path"), (True, "DPO, XGenMMDPOTrainer, shared images")):
        trainer, batch = xgenmm_dpo_trainer_and_batch(*fresh_model(), rows, output_dir, not args.full, share)
        results.append((name, *step_times(trainer, batch, args.repeats)))

    setting = "full DPO of the language model" if args.full else "LoRA on the language model"
    print(f"{Path(args.config).name}, {setting}, {args.batch_size} preference rows, {args.threads} thread(s), "
          f"median of {args.repeats} steps")  # fmt: skip
    sft_median = statistics.median(results[0][1])
    print(f"{'step':<40} {'ms':>8} {'vs SFT':>7} {'views encoded':>14}")
    for name, times, views in results:
        median = statistics.median(times)
        print(f"{name:<40} {median * 1000:>8.1f} {median / sft_median:>6.2f}x {views:>14}")


if __name__ == "__main__":
    main()
