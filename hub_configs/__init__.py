# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The configuration folders of the released xGen-MM variants, `tiny-random` (tests) and `toy-world` (the toy-world
recipe); installed as `xgenmm_hub_configs` and read with `importlib.resources`. `python -m
modeling_xgenmm.hub.write_configs` rewrites their processing files and model cards."""
