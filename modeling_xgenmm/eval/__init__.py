# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Evaluation with lmms-eval: the model it finds through its entry point, the base model's few-shot protocol, the
package's tasks and `xgenmm eval`. Each module's job is in the README's layout table."""
