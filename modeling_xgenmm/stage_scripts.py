# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The command lines behind `examples/`: one per trainer, the stage chosen by the example that calls it.

Every flag of the trainer's arguments works (`XGenMMTrainingArguments` / `XGenMMSFTConfig`), plus `ScriptArguments`
(model, data, LoRA, vision freezing) and, for `transformers.Trainer`, `CollatorArguments`.
"""

from pathlib import Path

from transformers import HfArgumentParser, Trainer

from xgenmm_processing.rows import load_rows

from .dpo import DPOScriptArguments, XGenMMDPOConfig, build_dpo_trainer, save_trained_model
from .training import (
    CollatorArguments,
    ScriptArguments,
    XGenMMSFTConfig,
    XGenMMTrainingArguments,
    build_trl_sft_trainer,
    load_model_and_processor,
    train_stage,
    weights_sha256,
)


def run_trainer_stage(stage: str, argv: list[str] | None = None) -> None:
    """Trains one stage (`pretrain`, `sft`, `interleaved_sft`) on `transformers.Trainer` and saves the result."""
    parser = HfArgumentParser((ScriptArguments, CollatorArguments, XGenMMTrainingArguments))
    script_args, collator_args, training_args = parser.parse_args_into_dataclasses(argv)
    model, processor = load_model_and_processor(script_args.model, seed=training_args.seed)
    rows = [row for path in script_args.data for row in load_rows(path)]
    trainer, metrics = train_stage(
        model,
        processor,
        rows,
        stage,
        training_args,
        max_length=collator_args.max_length,
        on_bad_sample=collator_args.on_bad_sample,
        freeze_vision=script_args.freeze_vision,
        lora=script_args.lora_config(model),
        resume_from_checkpoint=training_args.resume_from_checkpoint,
    )
    finish(trainer, stage, metrics, script_args.print_weights_sha256)


def run_trl_sft(argv: list[str] | None = None) -> None:
    """Supervised fine-tuning on TRL's `SFTTrainer` and saving the result."""
    parser = HfArgumentParser((ScriptArguments, XGenMMSFTConfig))
    script_args, sft_config = parser.parse_args_into_dataclasses(argv)
    model, processor = load_model_and_processor(script_args.model, seed=sft_config.seed)
    rows = [row for path in script_args.data for row in load_rows(path)]
    trainer = build_trl_sft_trainer(
        model,
        processor,
        rows,
        sft_config,
        freeze_vision=script_args.freeze_vision,
        lora=script_args.lora_config(model),
    )
    metrics = trainer.train(resume_from_checkpoint=sft_config.resume_from_checkpoint).metrics
    finish(trainer, "sft (TRL)", metrics, script_args.print_weights_sha256)


def finish(trainer: Trainer, name: str, metrics: dict, print_weights_sha256: bool) -> None:
    trainer.save_model()
    if trainer.is_world_process_zero():
        print(f"{name}: {metrics}")
    if print_weights_sha256:
        state = trainer.accelerator.state
        rank = f"rank {state.process_index} of {state.num_processes} ({state.backend})"
        # One write per line: the processes share stdout.
        print(f"{rank}: weights sha256 {weights_sha256(trainer.model)}\n", end="", flush=True)


def run_dpo_script(
    argv: list[str] | None = None, *, load_preference_rows, description: str, extra_arguments: tuple = ()
) -> None:
    """DPO of `--model` on the rows `load_preference_rows(path, images_dir, **extra)` reads from each `--data` file:
    `DPOScriptArguments`, any `XGenMMDPOConfig` flag, and the fields of each dataclass in `extra_arguments`, passed
    on as `**extra`. Saves the result (adapters merged) to `<output_dir>/model`."""
    parser = HfArgumentParser((DPOScriptArguments, *extra_arguments, XGenMMDPOConfig))
    script_args, *extra, dpo_config = parser.parse_args_into_dataclasses(argv)
    options = {name: value for arguments in extra for name, value in vars(arguments).items()}
    model, processor = load_model_and_processor(script_args.model)
    rows = [row for path in script_args.data for row in load_preference_rows(path, script_args.images_dir, **options)]
    trainer = build_dpo_trainer(
        model,
        processor,
        rows,
        dpo_config,
        lora=script_args.lora_config(model),
        freeze_resampler=script_args.freeze_resampler,
    )
    metrics = trainer.train(resume_from_checkpoint=dpo_config.resume_from_checkpoint).metrics
    save_trained_model(trainer, Path(dpo_config.output_dir) / "model")
    if trainer.is_world_process_zero():
        print(f"{description} ({len(rows)} pairs): {metrics}")
