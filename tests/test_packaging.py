"""What ships: every package folder is installed (setup.cfg lists it, and a wheel built from the tree holds every
module and data file), every `hub_configs/` folder is exactly what its generator writes, and the reference fixtures in
`tests/fixtures/` are the files their SHA256SUMS lists."""

import configparser
import filecmp
import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from modeling_xgenmm.hub.write_configs import write_hub_configs
from paths import (
    DEFAULT_ORIGINAL_FIXTURES,
    FIXTURE_SHA256SUMS,
    FIXTURES,
    HUB_CONFIGS,
    PHI3_TOKENIZER,
    REPO_ROOT,
)


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "setup.cfg")
    return parser


def installed_packages() -> dict[str, Path]:
    """Each package setup.cfg installs -> its folder in the tree (through `package_dir`)."""
    options = setup_cfg()["options"]
    lines = [line.split("=") for line in options["package_dir"].split("\n") if line.strip()]
    package_dir = {name.strip(): folder.strip() for name, folder in lines}
    folders = {}
    for name in options["packages"].split():
        root, *rest = name.split(".")
        folders[name] = REPO_ROOT / package_dir.get(root, root) / Path(*rest)
    return folders


def test_setup_cfg_lists_every_package_folder():
    listed = {folder.resolve() for folder in installed_packages().values()}
    roots = {REPO_ROOT / "modeling_xgenmm", REPO_ROOT / "processing", REPO_ROOT / "hub_configs"}
    found = {
        init.parent.resolve()
        for root in roots
        for init in root.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found == listed, f"not listed in setup.cfg: {sorted(map(str, found - listed))}"


def test_a_wheel_built_from_the_tree_holds_every_module_and_data_file(tmp_path):
    # A copy of the tree, so that no earlier build output (build/lib) can slip into the wheel.
    ignored = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "runs", "outputs")
    source = shutil.copytree(REPO_ROOT, tmp_path / "source", ignore=ignored)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    completed = subprocess.run([*build, str(source)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (wheel,) = tmp_path.glob("xgen_mm-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for name, folder in installed_packages().items():
        target = Path(*name.split("."))
        for path in folder.iterdir():
            if path.is_file() and path.suffix not in (".pyc",):
                expected.add(str(target / path.name))
        # Data folders inside a package (chat templates, the hub_configs variants).
        for path in folder.glob("*/*"):
            if path.is_file() and "__pycache__" not in path.parts and not (path.parent / "__init__.py").exists():
                expected.add(str(target / path.relative_to(folder)))
    assert not expected - shipped, f"missing from the wheel: {sorted(expected - shipped)}"


def test_hub_configs_folders_are_what_the_generator_writes(tmp_path):
    copy = shutil.copytree(HUB_CONFIGS, tmp_path / "hub_configs", ignore=shutil.ignore_patterns("__pycache__"))
    write_hub_configs(copy)
    comparison = filecmp.dircmp(HUB_CONFIGS, copy, ignore=["__pycache__"])
    stale = [f"{name}/{file}" for name, sub in comparison.subdirs.items() for file in sub.diff_files]
    assert not stale, f"stale files, rewrite them with `python -m modeling_xgenmm.hub.write_configs`: {stale}"
    assert not [name for name, sub in comparison.subdirs.items() if sub.left_only or sub.right_only]


def test_the_readme_layout_table_names_every_module_of_the_package():
    """The README's layout table is the package's inventory (the subpackages' `__init__` docstrings point to it): each
    module of `modeling_xgenmm/` and of its subpackages is named in its folder's row, and a folder without a row of
    its own (`eval/tasks/`) in its parent's."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") :]
    rows = dict(re.findall(r"^\| `(modeling_xgenmm/[\w/]*)` \| (.*) \|$", layout, flags=re.M))
    package = REPO_ROOT / "modeling_xgenmm"
    missing = []
    for folder in [package, *(path for path in package.iterdir() if (path / "__init__.py").is_file())]:
        row = rows.get(f"{folder.relative_to(REPO_ROOT)}/", "")
        names = [path.name for path in folder.glob("*.py") if path.name not in ("__init__.py", "__main__.py")]
        names += [
            f"{path.name}/" for path in folder.iterdir() if folder != package and (path / "__init__.py").is_file()
        ]
        missing += [f"{folder.relative_to(REPO_ROOT)}/{name}" for name in names if f"`{name}`" not in row]
    assert not missing, f"modules the README's layout table does not name in their folder's row: {missing}"


def test_the_readmes_supported_versions_are_the_ranges_setup_cfg_declares():
    """The README's "Supported versions" states the transformers range, the torch floor and the quant extra's torch
    floor that setup.cfg declares (and .ci/run tests the floors of), so that neither moves alone."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Supported versions") : readme.index("## Using a model")]
    config = setup_cfg()
    requires, quant = config["options"]["install_requires"], config["options.extras_require"]["quant"]
    transformers = re.search(r"^transformers(>=([\d.]+),<\d+)$", requires, flags=re.M)
    torch = re.search(r"^torch>=([\d.]+)$", requires, flags=re.M).group(1)
    quant_torch = re.search(r"^torch>=([\d.]+)$", quant, flags=re.M).group(1)
    assert f"transformers {transformers.group(2)} (the lowest vLLM accepts)" in section
    assert f"(`{transformers.group(1)}`)" in section
    assert f"torch {torch} to the newest (`>={torch}`)" in section
    assert f"need torch {quant_torch}, torchao" in section
    assert f"torch {torch} under transformers {transformers.group(2)}" in section


def test_fixture_files_are_those_listed_in_sha256sums():
    """A corrupted, partly copied, missing or unlisted fixture file fails, named (SHA256SUMS is `sha256sum` output)."""
    listed = {}
    for line in FIXTURE_SHA256SUMS.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.removeprefix("*")] = digest
    for folder in (DEFAULT_ORIGINAL_FIXTURES, PHI3_TOKENIZER):
        assert any(name.startswith(f"{folder.name}/") for name in listed), f"SHA256SUMS lists nothing in {folder}"
    present = {
        path.relative_to(FIXTURES).as_posix()
        for path in FIXTURES.rglob("*")
        if path.is_file() and path.parent != FIXTURES and "__pycache__" not in path.parts
    }
    missing, unlisted = sorted(set(listed) - present), sorted(present - set(listed))
    assert not missing, f"fixture files listed in {FIXTURE_SHA256SUMS} but missing: {missing}"
    assert not unlisted, f"fixture files that {FIXTURE_SHA256SUMS} does not list: {unlisted}"
    differing = [
        name for name, digest in listed.items() if hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() != digest
    ]
    assert not differing, f"fixture files whose sha256 differs from {FIXTURE_SHA256SUMS}: {differing}"
