# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Pretraining and supervised fine-tuning of xGen-MM on `transformers.Trainer` (with `XGenMMDataCollator`), and SFT
on TRL's `SFTTrainer`.

Stages (they differ in the rows they accept):

- `"pretrain"`: interleaved documents and caption pairs, every text token a target.
- `"sft"`: conversations (single-image instruction data), assistant turns as targets.
- `"interleaved_sft"`: conversations with several images each, assistant turns as targets.
"""

from collections.abc import Sequence

import datasets
from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature
from peft import LoraConfig, get_peft_model
from torch.utils.data import IterableDataset
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from trl import SFTConfig, SFTTrainer

from ..checkpoint.contents import IMAGE_TOKEN
from .arguments import XGenMMSFTConfig, XGenMMTrainingArguments
from .collators import BAD_SAMPLE_ERRORS, XGenMMDataCollator
from .freezing import freeze_vision_tower
from .resume import train_resuming
from .rows import STAGES, conversation_messages, describe_row, row_kind
from .streaming import SkipCounts
from .validation import validate_rows


TRL_CONVERSATION_FEATURES = Features(
    {
        "messages": List(
            {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
        ),
        "images": List(ImageFeature()),
    }
)


class XGenMMTrainer(Trainer):
    """`Trainer` that also logs, at each logging step, what the data skipped: the collator's bad rows
    (`skipped_rows`) and a streamed corpus's dropped records by reason (`skip_counts`, from
    `modeling_xgenmm.train.streaming`), counted in this process."""

    def __init__(self, *args, skip_counts: SkipCounts | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip_counts = skip_counts

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # No cache while training, as TRL's SFTTrainer passes it: the language model would take its default from its
        # own config, which the Trainer's `args.use_cache` (set on the outer config) does not reach, and warn that
        # caching is off under activation checkpointing.
        inputs = {**inputs, "use_cache": False}
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training step's log
            logs["skipped_rows"] = getattr(self.data_collator, "num_skipped", 0)
            if self.skip_counts is not None:
                logs.update(self.skip_counts.as_logs())
        super().log(logs, start_time)


def check_stage_inputs(stage: str, train_rows: Sequence[dict] | IterableDataset, args: TrainingArguments) -> None:
    """Raises for what `build_trainer` cannot train, naming what was expected: an unknown stage, arguments that would
    strip the rows' keys, no rows, a stream without `max_steps`."""
    if stage not in STAGES:
        raise ValueError(f"stage is one of {sorted(STAGES)}, got {stage!r}")
    if args.remove_unused_columns:
        raise ValueError(
            "remove_unused_columns=True would strip the rows' keys before the xGen-MM collator reads them; "
            "set it to False (XGenMMTrainingArguments does)"
        )
    streamed = isinstance(train_rows, IterableDataset)
    if not streamed and not len(train_rows):
        raise ValueError(f"no training rows for the {stage!r} stage")
    if streamed and args.max_steps <= 0:
        raise ValueError(
            "a streamed training set has no length: set max_steps (the number of optimizer steps to train for)"
        )


class StreamRowCheck:
    """A stream's filter: keeps the rows the collator can train on (`XGenMMDataCollator.check`, no pixel decoded) and
    drops the others, counted as `bad_row` and logged naming the row and where it was read. A stream cannot be checked
    before the run, and a bad row that raised mid-run would stop the resumed run at the same row again."""

    def __init__(self, collator: XGenMMDataCollator, counts: SkipCounts):
        self.collator, self.counts = collator, counts

    def __call__(self, row: dict) -> bool:
        try:
            self.collator.check(row)
        except BAD_SAMPLE_ERRORS as error:
            self.counts.skip("bad_row", describe_row(row), str(error))
            return False
        return True


def stage_collator(processor, stage: str, args: TrainingArguments) -> XGenMMDataCollator:
    """The stage's `XGenMMDataCollator`: the row formats of `stage`, and `max_length`, `on_bad_sample` and
    `padding_free` from `XGenMMTrainingArguments` (the collator's defaults for plain `TrainingArguments`)."""
    return XGenMMDataCollator(
        processor,
        max_length=getattr(args, "max_length", None),
        on_bad_sample=getattr(args, "on_bad_sample", "raise"),
        row_kinds=STAGES[stage],
        padding_free=getattr(args, "padding_free", False),
    )


def build_trainer(
    model: PreTrainedModel,
    processor,
    train_rows: Sequence[dict],
    stage: str,
    args: TrainingArguments | None = None,
    *,
    eval_rows: Sequence[dict] | None = None,
    peft_config: LoraConfig | None = None,
    freeze_vision: bool = True,
    check_rows: bool = True,
    callbacks: list[TrainerCallback] | None = None,
    skip_counts: SkipCounts | None = None,
) -> Trainer:
    """A `transformers.Trainer` for one stage, with the policy applied and `XGenMMDataCollator` as collator.

    Args:
        model: an `XGenMMForConditionalGeneration` (fp32 master weights).
        processor: its `XGenMMProcessor`; the Trainer saves it with every checkpoint.
        train_rows, eval_rows: any sequence of rows (a list, a `datasets.Dataset`) or a stream of them (an
            `IterableDataset`, e.g. `datasets.load_dataset(..., streaming=True)` or `streaming.pretraining_stream`,
            trained for `max_steps`); see `modeling_xgenmm.train.rows`.
        stage: `"pretrain"`, `"sft"` or `"interleaved_sft"`; decides which row formats are accepted.
        args: `XGenMMTrainingArguments` (its `max_length` and `on_bad_sample` configure the collator), or plain
            `TrainingArguments` with `remove_unused_columns=False`. In-memory rows are all checked before training
            (`validate_rows`): a bad one raises, or with `on_bad_sample="skip"` is left out and counted.
        peft_config: LoRA adapters to train instead of the weights (`lora_config(model)`), or `None`.
        freeze_vision: freeze the vision tower (the released recipe); with LoRA only adapters train anyway.
        check_rows: check every in-memory row before training (`validate_rows`); rows made by code that are right by
            construction (the toy world's) can skip it. A `datasets` stream is checked row by row as it is read
            (`StreamRowCheck`): a bad row is dropped and counted in `skip_counts` whatever `on_bad_sample` says.
        skip_counts: the `SkipCounts` of a streamed corpus, logged at each logging step (a new one for a stream
            without).
    """
    args = args if args is not None else XGenMMTrainingArguments()
    check_stage_inputs(stage, train_rows, args)
    if freeze_vision:
        freeze_vision_tower(model)
    if peft_config is not None:
        model = get_peft_model(model, peft_config)
    collator = stage_collator(processor, stage, args)
    if isinstance(train_rows, datasets.IterableDataset):
        skip_counts = skip_counts if skip_counts is not None else SkipCounts()
        if check_rows:
            train_rows = train_rows.filter(StreamRowCheck(collator, skip_counts))
    elif check_rows and not isinstance(train_rows, IterableDataset):
        train_rows = validate_rows(train_rows, collator)
    return XGenMMTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=processor,
        callbacks=callbacks,
        skip_counts=skip_counts,
    )


def train_stage(
    model: PreTrainedModel,
    processor,
    train_rows: Sequence[dict],
    stage: str,
    args: TrainingArguments | None = None,
    *,
    resume_from_checkpoint: str | bool | None = None,
    **trainer_kwargs,
) -> tuple[Trainer, dict]:
    """Builds the stage's trainer (`build_trainer`, same arguments), trains, and returns the trainer and the training
    metrics (with `skipped_rows`, this process's count of bad rows skipped). Without `resume_from_checkpoint` it
    resumes as `checkpoint_to_resume(args)` says (by default from the last complete checkpoint in `output_dir`); a
    stage that its last checkpoint finished is not trained again, and a stream that gives no row to train on is an
    error (`train_resuming`)."""
    trainer = build_trainer(model, processor, train_rows, stage, args, **trainer_kwargs)
    metrics = dict(train_resuming(trainer, resume_from_checkpoint).metrics)
    metrics["skipped_rows"] = trainer.data_collator.num_skipped
    metrics["empty_batches"] = trainer.data_collator.num_empty_batches
    return trainer, metrics


def trl_conversation_row(row: dict, image_token: str = IMAGE_TOKEN) -> dict:
    """A conversation row (either form) as TRL's vision collator reads it: `messages` with list content and
    `{"type": "image"}` placeholders, and `images`."""
    kind = row_kind(row)
    if kind != "conversation":
        raise ValueError(f"SFT takes conversation rows, got a {kind} row")
    messages, images = conversation_messages(row, image_token)
    return {"messages": messages, "images": images}


def build_trl_sft_trainer(
    model: PreTrainedModel,
    processor,
    train_rows: Sequence[dict],
    args: SFTConfig | None = None,
    *,
    peft_config: LoraConfig | None = None,
    freeze_vision: bool = True,
    callbacks: list[TrainerCallback] | None = None,
) -> SFTTrainer:
    """SFT through TRL's `SFTTrainer` (`processing_class=processor`, TRL's `DataCollatorForVisionLanguageModeling`).

    With `assistant_only_loss=True` (the `XGenMMSFTConfig` default) TRL's labels are the chat template's assistant
    spans, as in `XGenMMDataCollator`; TRL forwards every collator key to the model, `image_sizes` included. Rows
    are converted with `trl_conversation_row` (TRL's collator reads only `messages` + `images`). Unlike
    `XGenMMDataCollator`, TRL truncation that would cut an image raises (the processor refuses it).
    """
    args = args if args is not None else XGenMMSFTConfig()
    rows = [trl_conversation_row(row, processor.image_token) for row in train_rows]
    if not rows:
        raise ValueError("no training rows for SFT")
    # SFTTrainer takes a `datasets.Dataset`. The Image feature stores paths as paths and decodes them (and PIL
    # images) when a row is read, so paths and in-memory images mix freely.
    dataset = Dataset.from_list(rows, features=TRL_CONVERSATION_FEATURES)
    if freeze_vision:
        freeze_vision_tower(model)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=callbacks,
    )


__all__ = [
    "StreamRowCheck",
    "XGenMMTrainer",
    "build_trainer",
    "build_trl_sft_trainer",
    "train_stage",
    "trl_conversation_row",
]
