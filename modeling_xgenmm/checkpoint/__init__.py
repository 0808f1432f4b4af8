# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Checkpoints on disk: the released Salesforce checkpoints' original format (`key_map`: the key map that
`from_pretrained` applies on load; `convert`: the streaming converter behind `xgenmm convert`) and model folders
(`folders`: weight files, writing an output folder)."""
