"""Where the tests find the repository's folders and the fixtures recorded from the original implementation."""

import os
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]
HUB_CONFIGS = REPO_ROOT / "hub_configs"
TINY_RANDOM = HUB_CONFIGS / "tiny-random"
SHARED = REPO_ROOT.parent / "shared"
DEFAULT_ORIGINAL_FIXTURES = SHARED / "fixtures" / "official_tiny"
# The real Phi-3 vocabulary with the Salesforce tokenizer files, and the original ids of 52 strings.
PHI3_TOKENIZER = SHARED / "fixtures" / "phi3_tokenizer"


def original_fixtures_dir() -> Path:
    """The folder of reference outputs recorded from the original Salesforce code.

    `XGENMM_ORIGINAL_FIXTURES` names it explicitly; a folder named there that does not exist is an error, not a skip.
    Without the variable, the default `../shared/fixtures/official_tiny` is used and its absence skips the test.
    """
    named = os.environ.get("XGENMM_ORIGINAL_FIXTURES")
    if named:
        path = Path(named)
        if not (path / "cases" / "index.json").is_file() and not (path / "image_processing").is_dir():
            raise FileNotFoundError(
                f"XGENMM_ORIGINAL_FIXTURES={named} does not hold the original fixtures (no cases/index.json "
                "or image_processing/ there)"
            )
        return path
    if not DEFAULT_ORIGINAL_FIXTURES.is_dir():
        pytest.skip(f"original fixtures not found at {DEFAULT_ORIGINAL_FIXTURES} and XGENMM_ORIGINAL_FIXTURES unset")
    return DEFAULT_ORIGINAL_FIXTURES
