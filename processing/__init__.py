# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Processing for xGen-MM: image processor, tokenizer, processor (installed as `xgenmm_processing`)."""
