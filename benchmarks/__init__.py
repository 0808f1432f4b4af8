# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Speed and memory of xGen-MM: `python -m benchmarks.run` prints the tables (see the README)."""
