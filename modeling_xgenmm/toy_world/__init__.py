# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""A synthetic world of coloured shapes and a one-command recipe that trains a small xGen-MM model on it: `settings`
(the run's sizes), `data` (scenes and rows), `recipe` (pretraining and SFT), `evaluation` (exact-match accuracy),
`dpo` (preference tuning on hallucinated answers)."""
