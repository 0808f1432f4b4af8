# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The Hugging Face Hub side: what a model folder holds besides its weights (`variants`: instruct or base, processor,
chat template, end of turn), model cards (`model_card`), publishing (`publish`, behind `xgenmm publish`) and the
`hub_configs/` folders (`hub_configs`)."""
