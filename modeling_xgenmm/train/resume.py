# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Which checkpoint a training run resumes from, so that re-running a stage never loses work.

By default a run resumes from the last complete `checkpoint-N` in its `output_dir` (a stage re-run after a crash or a
preemption continues instead of restarting at step 0, whose checkpoint rotation would delete the earlier run's
checkpoints). A stage whose last checkpoint finished it is not trained again (`train_resuming`: the Trainer would
train one step past the end, and its rotation would delete the finished run's checkpoints); its weights are loaded
instead. Half-written checkpoints, left by a process killed while saving, are skipped. `start_over` moves the earlier
checkpoints aside into `output_dir/previous-run-<timestamp>/` instead of deleting anything. A streamed run records in
each checkpoint the files it reads, and a run resumed on other files says so (its replay follows another order).
"""

import json
import re
import time
from itertools import count
from pathlib import Path

from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput
from transformers.utils import (
    ADAPTER_SAFE_WEIGHTS_NAME,
    ADAPTER_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    logging,
)

from .streaming import stream_files


logger = logging.get_logger(__name__)

TRAINER_STATE = "trainer_state.json"
# Full weights (single file or the shard index, written after every shard) or PEFT adapters; FSDP and DeepSpeed keep
# theirs in `pytorch_model_fsdp*` and `global_step*` entries.
WEIGHTS = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
ADAPTER_WEIGHTS = (ADAPTER_SAFE_WEIGHTS_NAME, ADAPTER_WEIGHTS_NAME)
WEIGHT_PREFIXES = ("pytorch_model_fsdp", "global_step")
# `optimizer.pt` (`optimizer.bin` with accelerate), FSDP's `optimizer_0/`, DeepSpeed's `global_step*/`.
OPTIMIZER_PREFIXES = ("optimizer", "global_step")
LATEST = {"latest", "true"}
CHECKPOINT_NAME = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")
# The files a streamed run reads and their sizes, written into each of its checkpoints.
DATA_FILES = "data_files.json"


def missing_checkpoint_files(folder: str | Path, optimizer: bool = True) -> list[str]:
    """What `folder` lacks to be a complete Trainer checkpoint; an empty list means complete.

    `Trainer._save_checkpoint` writes the model (weights or PEFT adapters, with config and processor), then the
    optimizer and scheduler, the scaler, the RNG state, and `trainer_state.json` last. So a readable
    `trainer_state.json` means every earlier write finished; a process killed while saving leaves it absent or cut
    short. The weights (full or adapter) and, unless `optimizer=False` (`save_only_model` runs save none), the
    optimizer state are checked too: resuming needs them and they may have been removed after the save.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"the folder {folder}"]
    names = {path.name for path in folder.iterdir()}
    missing = []
    if not names & {*WEIGHTS, *ADAPTER_WEIGHTS} and not any(name.startswith(WEIGHT_PREFIXES) for name in names):
        missing.append(f"model weights ({SAFE_WEIGHTS_NAME}, or {ADAPTER_SAFE_WEIGHTS_NAME} with PEFT)")
    if optimizer and not any(name.startswith(OPTIMIZER_PREFIXES) for name in names):
        missing.append("optimizer.pt")
    try:
        json.loads((folder / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        missing.append(TRAINER_STATE)
    return missing


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, by step (oldest first)."""
    output_dir = Path(output_dir)
    steps = {}
    for path in output_dir.iterdir() if output_dir.is_dir() else ():
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match and path.is_dir():
            steps[path] = int(match[1])
    return sorted(steps, key=steps.get)


def last_complete_checkpoint(args: TrainingArguments) -> Path | None:
    """The last complete checkpoint of `args.output_dir`; warns about the half-written ones skipped."""
    complete, skipped = None, []
    for folder in checkpoint_folders(args.output_dir):
        missing = missing_checkpoint_files(folder, optimizer=not args.save_only_model)
        if missing:
            skipped.append(f"{folder.name} (no {', '.join(missing)})")
        else:
            complete = folder
    if skipped:
        logger.warning(f"skipping incomplete checkpoints in {args.output_dir}: {'; '.join(skipped)}")
    return complete


def move_checkpoints_aside(output_dir: str | Path) -> Path | None:
    """Moves the `checkpoint-N` folders of `output_dir` into a new `output_dir/previous-run-<timestamp>/`, so that the
    new run's checkpoint rotation cannot delete them; returns that folder (`None` when there was nothing to move)."""
    folders = checkpoint_folders(output_dir)
    if not folders:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in count(1):
        target = Path(output_dir) / (f"previous-run-{stamp}" if n == 1 else f"previous-run-{stamp}-{n}")
        if not target.exists():
            break
    target.mkdir()
    for folder in folders:
        folder.rename(target / folder.name)
    logger.warning(f"start_over: moved {len(folders)} earlier checkpoints of {output_dir} into {target}")
    return target


def checkpoint_to_resume(args: TrainingArguments) -> str | None:
    """The checkpoint a run with these training arguments resumes from (`trainer.train(resume_from_checkpoint=...)`).

    - `resume_from_checkpoint` a path: that checkpoint, which must be complete (`missing_checkpoint_files`).
    - `"latest"` or `True`/`"true"`: the last complete checkpoint of `output_dir`, which must exist.
    - unset: the last complete checkpoint of `output_dir` if there is one, else `None` (a fresh start).
    - `start_over`: `None`, after moving the earlier checkpoints aside (`move_checkpoints_aside`; the main process
      moves them, the others wait).
    """
    resume = args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in LATEST | {"false"}:
        resume = resume.lower() != "false"
    if getattr(args, "start_over", False):
        if resume is not None:
            raise ValueError(
                f"start_over and resume_from_checkpoint={args.resume_from_checkpoint!r} contradict each other; "
                "pass only one"
            )
        with args.main_process_first(local=args.save_on_each_node, desc="moving earlier checkpoints aside"):
            if args.should_save:
                move_checkpoints_aside(args.output_dir)
        return None
    if resume is False:
        raise ValueError(
            "resume_from_checkpoint=false: runs resume from their output_dir's last checkpoint; to start over, pass "
            "--start_over true (the earlier checkpoints are moved aside, not deleted)"
        )
    if isinstance(resume, str):
        missing = missing_checkpoint_files(resume, optimizer=not args.save_only_model)
        if missing:
            raise ValueError(
                f"cannot resume from {resume}: it is not a complete checkpoint, missing {', '.join(missing)}"
            )
        return resume
    checkpoint = last_complete_checkpoint(args)
    if checkpoint is None and resume:
        raise ValueError(
            f"resume_from_checkpoint={args.resume_from_checkpoint}: {args.output_dir} holds no complete checkpoint; "
            "drop the flag to start a new run"
        )
    if checkpoint is not None and resume is None:
        logger.warning(
            f"resuming from {checkpoint}, the last complete checkpoint in {args.output_dir}; to start over, pass "
            "--start_over true (the earlier checkpoints are moved aside, not deleted)"
        )
    return None if checkpoint is None else str(checkpoint)


def has_finished(args: TrainingArguments, state: TrainerState) -> bool:
    """Whether a checkpoint's `state` already reached the end these arguments plan (`max_steps`, or the same number of
    epochs as the run that wrote it)."""
    if args.max_steps > 0:
        planned = args.max_steps
    elif state.num_train_epochs == args.num_train_epochs:
        planned = state.max_steps
    else:
        return False
    return state.global_step >= planned


class RecordDataFiles(TrainerCallback):
    """Writes the files a streamed run reads (`streaming.stream_files`: names and sizes) into each checkpoint it saves,
    so that a resumed run can tell whether its replay of the stream follows the same order."""

    def __init__(self, files: dict[str, int | None]):
        self.files = files

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if args.should_save and folder.is_dir():
            (folder / DATA_FILES).write_text(json.dumps(self.files, indent=1), encoding="utf-8")


def warn_if_data_files_changed(checkpoint: str | Path, files: dict[str, int | None]) -> None:
    """Warns when `checkpoint` was saved by a run that streamed other files (or files of other sizes) than `files`:
    the resumed run replays the stream to the checkpoint's step in another order, so some rows are trained twice
    and others never."""
    try:
        recorded = json.loads((Path(checkpoint) / DATA_FILES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if recorded == files:
        return
    changes = {
        "added": sorted(files.keys() - recorded.keys()),
        "removed": sorted(recorded.keys() - files.keys()),
        "changed size": sorted(name for name in files.keys() & recorded.keys() if files[name] != recorded[name]),
    }
    listed = "; ".join(f"{what}: {', '.join(names)}" for what, names in changes.items() if names)
    logger.warning(
        f"resuming from {checkpoint}, whose run streamed other data files ({listed}): the stream replayed to its step "
        "follows another order, so some rows are trained again and others skipped. Pass --ignore_data_skip true to "
        "start the stream afresh instead, or --start_over true to start the stage over"
    )


def train_resuming(trainer: Trainer, resume_from_checkpoint: str | bool | None = None) -> TrainOutput:
    """`trainer.train()`, resuming from `resume_from_checkpoint` or, when None, where `checkpoint_to_resume` says.

    A checkpoint that already reached the end of the stage (`has_finished`) is not trained on: its weights are
    loaded into the trainer's model (so that saving it writes the finished model again), the trainer takes its state,
    and a warning says so. A streamed training set (`streaming.stream_files`) has its files recorded in every
    checkpoint, and a resumed run on other files is warned about (`warn_if_data_files_changed`). A stream that gives
    no row to train on (the Trainer stops at once, and would report success) raises `ValueError` with what the
    stream dropped (`trainer.skip_counts`).
    """
    if resume_from_checkpoint is None:
        resume_from_checkpoint = checkpoint_to_resume(trainer.args)
    files = stream_files(trainer.train_dataset)
    if files is not None:
        trainer.add_callback(RecordDataFiles(files))
    if not isinstance(resume_from_checkpoint, (str, Path)):
        return check_trained(trainer, trainer.train(resume_from_checkpoint=resume_from_checkpoint), 0)
    state = TrainerState.load_from_json(str(Path(resume_from_checkpoint) / TRAINER_STATE))
    if not has_finished(trainer.args, state):
        if files is not None:
            warn_if_data_files_changed(resume_from_checkpoint, files)
        output = trainer.train(resume_from_checkpoint=str(resume_from_checkpoint))
        return check_trained(trainer, output, state.global_step)
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        raise ValueError(
            f"{resume_from_checkpoint} already finished this stage (step {state.global_step}): nothing to train. Its "
            "model is the stage's result; pass --start_over true to train the stage again, or raise --max_steps"
        )
    logger.warning(
        f"{resume_from_checkpoint} already finished this stage (step {state.global_step} of {state.max_steps}): "
        "nothing to train, its weights are loaded. Pass --start_over true to train the stage again (the earlier "
        "checkpoints are moved aside), or raise --max_steps to train on"
    )
    # The Trainer's own loading of a checkpoint's weights: whole, sharded or PEFT adapters.
    trainer._load_from_checkpoint(str(resume_from_checkpoint))
    trainer.state = state
    losses = [entry["train_loss"] for entry in state.log_history if "train_loss" in entry]
    return TrainOutput(state.global_step, losses[-1] if losses else float("nan"), {"epoch": state.epoch})


def check_trained(trainer: Trainer, output: TrainOutput, start_step: int) -> TrainOutput:
    """`output`, unless a streamed run trained no step from `start_step` although its plan has more: then every row the
    stream held was dropped (or it holds none), and `ValueError` says by which reasons."""
    streamed = not hasattr(trainer.train_dataset, "__len__")
    if streamed and trainer.state.global_step == start_step < trainer.args.max_steps:
        counts = getattr(trainer, "skip_counts", None) or {}
        dropped = ", ".join(f"{count} {reason}" for reason, count in counts.items()) or "none counted"
        raise ValueError(
            f"the stream gave no rows to train on after step {start_step} of max_steps={trainer.args.max_steps} "
            f"(records dropped: {dropped}; the warnings above name them). Check the data files and their format "
            "for the stage"
        )
    return output


__all__ = [
    "RecordDataFiles",
    "check_trained",
    "checkpoint_to_resume",
    "has_finished",
    "last_complete_checkpoint",
    "missing_checkpoint_files",
    "move_checkpoints_aside",
    "train_resuming",
    "warn_if_data_files_changed",
]
