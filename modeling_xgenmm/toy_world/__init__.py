# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""A synthetic world of coloured shapes and the recipe that trains a small xGen-MM model on it through the package's
own stages (pretraining, SFT, DPO, GRPO) and scores it on held-out questions. Each module's job is in the README's
layout table."""
