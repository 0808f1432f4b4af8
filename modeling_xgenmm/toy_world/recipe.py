# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The toy-world recipe: a small randomly initialised xGen-MM model learns to see coloured shapes, through the same
stages, collator and `transformers.Trainer` as the real recipe, on a CPU in minutes.

1. Pretraining on caption pairs and interleaved documents (the vision tower trains too: it starts random), streamed
   from webdataset tar shards and OBELICS-layout parquet files written to a temporary folder.
2. Supervised fine-tuning on single-image questions (colour, shape, count) and two-image questions, the vision tower
   frozen as in the released recipe.
3. Evaluation on held-out splits (other seeds): greedy answers, exact match per question kind.

    xgenmm toy-world --output-dir runs/toy-world
"""

import os
import tempfile
import time
from pathlib import Path

from torch.utils.data import ConcatDataset
from transformers import PreTrainedModel, Trainer
from transformers.utils import logging

from ..train.arguments import XGenMMModelConfig, XGenMMTrainingArguments
from ..train.loading import load_model_and_processor
from ..train.lora import peft_config_from_args
from ..train.resume import train_resuming
from ..train.saving import save_trained_model
from ..train.sft import train_stage
from ..train.streaming import load_training_data
from .data import PAIR_QUESTIONS, QUESTIONS, split_rows
from .evaluation import answer_accuracy
from .settings import DEFAULT_CONFIG, ToyWorldSettings, stage_arguments
from .shards import write_caption_shards, write_document_parquet


logger = logging.get_logger(__name__)

SINGLE_IMAGE_KINDS = tuple(QUESTIONS)
TWO_IMAGE_KINDS = tuple(PAIR_QUESTIONS)


def recipe_arguments(output_dir: Path, steps: int, batch_size: int, settings: ToyWorldSettings):
    return stage_arguments(
        XGenMMTrainingArguments,
        output_dir,
        steps,
        batch_size,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_steps,
        lr_scheduler_type="cosine",
        seed=settings.seed,
    )


def pretraining_rows(settings: ToyWorldSettings) -> ConcatDataset:
    """One row per sample of the pretraining steps: caption pairs and interleaved documents, half each."""
    half = settings.pretrain_steps * settings.pretrain_batch_size // 2
    return ConcatDataset(
        [
            split_rows("pretrain_captions", half, settings.seed),
            split_rows("pretrain_documents", half, settings.seed),
        ]
    )


def pretraining_corpus(settings: ToyWorldSettings, folder: Path, shards: int = 4) -> list[Path]:
    """`pretraining_rows` written as a web corpus in `folder`: the caption pairs as webdataset tar shards, the
    documents as OBELICS-layout parquet files, `shards` of each."""
    captions, documents = pretraining_rows(settings).datasets
    return write_caption_shards(captions, folder, shards) + write_document_parquet(documents, folder, shards)


def fine_tuning_rows(settings: ToyWorldSettings) -> ConcatDataset:
    """One row per sample of the fine-tuning steps: `pair_fraction` two-image questions, the rest single-image ones
    (the Trainer shuffles them)."""
    size = settings.sft_steps * settings.sft_batch_size
    pairs = round(size * settings.pair_fraction)
    return ConcatDataset(
        [split_rows("sft_questions", size - pairs, settings.seed), split_rows("sft_pairs", pairs, settings.seed)]
    )


def held_out_rows(settings: ToyWorldSettings) -> ConcatDataset:
    """`eval_rows` single-image and `eval_rows` two-image questions from seeds no training split uses."""
    return ConcatDataset(
        [
            split_rows("held_out_questions", settings.eval_rows, settings.seed),
            split_rows("held_out_pairs", settings.eval_rows, settings.seed),
        ]
    )


def kind_means(accuracy: dict[str, float]) -> dict[str, float]:
    """`single_image` and `two_image`: the mean accuracy of the single- and of the two-image question kinds."""
    return {
        "single_image": sum(accuracy[kind] for kind in SINGLE_IMAGE_KINDS) / len(SINGLE_IMAGE_KINDS),
        "two_image": sum(accuracy[kind] for kind in TWO_IMAGE_KINDS) / len(TWO_IMAGE_KINDS),
    }


def run_toy_world(
    output_dir: str | os.PathLike,
    settings: ToyWorldSettings | None = None,
    config_dir: str | os.PathLike = DEFAULT_CONFIG,
) -> dict[str, float]:
    """Trains the toy-world model (pretrain -> SFT), saves it with its processor to `output_dir`, and returns the
    held-out accuracy per question kind plus `single_image` and `two_image` averages."""
    settings = settings or ToyWorldSettings()
    output_dir = Path(output_dir)
    config_dir = Path(config_dir)
    if not (config_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"no toy-world config at {config_dir}; run from a checkout of xgen-mm or pass the hub_configs/toy-world "
            "folder explicitly"
        )
    started = time.perf_counter()
    # The same entries as examples/train.py: the model of the config folder, its corpus read as a real run reads a web
    # corpus (streamed from tar shards and parquet files), `train_stage`.
    model, processor = load_model_and_processor(config_dir, seed=settings.seed)
    with tempfile.TemporaryDirectory(prefix="toy-world-corpus-") as corpus:
        stream, skip_counts = load_training_data(
            pretraining_corpus(settings, Path(corpus)), seed=settings.seed, shuffle_buffer=1000
        )
        train_stage(
            model,
            processor,
            stream,
            "pretrain",
            recipe_arguments(output_dir / "pretrain", settings.pretrain_steps, settings.pretrain_batch_size, settings),
            freeze_vision=False,
            skip_counts=skip_counts,
        )

    trainer, _ = train_stage(
        model,
        processor,
        fine_tuning_rows(settings),
        "interleaved_sft",
        recipe_arguments(output_dir / "sft", settings.sft_steps, settings.sft_batch_size, settings),
        freeze_vision=settings.freeze_vision_in_sft,
        check_rows=False,
    )
    trainer.save_model(str(output_dir / "model"))

    accuracy = answer_accuracy(model, processor, held_out_rows(settings))
    accuracy.update(kind_means(accuracy))
    logger.info(f"toy world trained and evaluated in {time.perf_counter() - started:.0f} s")
    return accuracy


def post_training_start(sft_model: str | os.PathLike, settings, seed: int) -> tuple[PreTrainedModel, object, dict]:
    """Where the toy world's post-training stages (DPO, GRPO) start, as their scripts' flags set it: the saved SFT
    model and its processor, and the policy keywords of the stage builders (`peft_config`, `freeze_vision`) from the
    model arguments `settings.use_peft` and `settings.freeze_vision` (`XGenMMModelConfig`)."""
    model_args = XGenMMModelConfig(
        model_name_or_path=str(sft_model), use_peft=settings.use_peft, freeze_vision=settings.freeze_vision
    )
    model, processor = load_model_and_processor(model_args.model_name_or_path, seed=seed)
    policy = {"peft_config": peft_config_from_args(model_args, model), "freeze_vision": model_args.freeze_vision}
    return model, processor, policy


def train_and_save(trainer: Trainer, output_dir: Path) -> PreTrainedModel:
    """Trains as every stage does (`train_resuming`: from the last complete checkpoint in the trainer's `output_dir`,
    if any) and saves the model (adapters merged) with its processor to `output_dir/model`."""
    train_resuming(trainer)
    return save_trained_model(trainer, output_dir / "model")
