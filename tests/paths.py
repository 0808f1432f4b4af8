"""Where the tests find the repository's folders and the fixtures recorded from the original implementation."""

import os
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]
HUB_CONFIGS = REPO_ROOT / "hub_configs"
TINY_RANDOM = HUB_CONFIGS / "tiny-random"
# The fixture sets kept in the repository (tests/fixtures/README.md says where they come from; SHA256SUMS, hashes).
FIXTURES = REPO_ROOT / "tests" / "fixtures"
FIXTURE_SHA256SUMS = FIXTURES / "SHA256SUMS"
DEFAULT_ORIGINAL_FIXTURES = FIXTURES / "official_tiny"
# The real Phi-3 vocabulary with the Salesforce tokenizer files, and the original ids of 52 strings.
PHI3_TOKENIZER = FIXTURES / "phi3_tokenizer"


def original_fixtures_dir() -> Path:
    """The folder of reference outputs recorded from the original Salesforce code.

    `XGENMM_ORIGINAL_FIXTURES` names another set recorded the same way; a folder named there that does not hold one is
    an error. Without the variable, the set kept in the repository (`tests/fixtures/official_tiny`) is used.
    """
    named = os.environ.get("XGENMM_ORIGINAL_FIXTURES")
    if not named:
        return DEFAULT_ORIGINAL_FIXTURES
    path = Path(named)
    if not (path / "cases" / "index.json").is_file() and not (path / "image_processing").is_dir():
        raise FileNotFoundError(
            f"XGENMM_ORIGINAL_FIXTURES={named} does not hold the original fixtures (no cases/index.json "
            "or image_processing/ there)"
        )
    return path
