# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""The Hugging Face Hub side: the variants' facts, model cards and their results, publishing, and the writer of the
`hub_configs/` folders. Each module's job is in the README's layout table."""
