# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Which checkpoint a training run resumes from, so that re-running a stage never loses work.

By default a run resumes from the last complete `checkpoint-N` in its `output_dir` (a stage re-run after a crash, a
preemption or a finished run continues instead of restarting at step 0, whose checkpoint rotation would delete the
earlier run's checkpoints). Half-written checkpoints, left by a process killed while saving, are skipped. `start_over`
moves the earlier checkpoints aside into `output_dir/previous-run-<timestamp>/` instead of deleting anything.
"""

import json
import re
import time
from itertools import count
from pathlib import Path

from transformers import TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import (
    ADAPTER_SAFE_WEIGHTS_NAME,
    ADAPTER_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    logging,
)


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


__all__ = ["checkpoint_to_resume", "last_complete_checkpoint", "missing_checkpoint_files", "move_checkpoints_aside"]
