# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Model folders: the released Salesforce checkpoints' original format and its conversion, what a folder holds, and
the Hub requests that fetch one. Each module's job is in the README's layout table."""
