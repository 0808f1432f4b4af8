# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Evaluation: the lmms-eval model (`lmms`, imported by lmms-eval through its entry point), the base model's few-shot
protocol (`fewshot`), the toy-world lmms-eval task (`tasks/`) and eval results in model cards (`results`)."""
