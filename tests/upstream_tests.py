"""transformers' own processor and image-processor test mixins, fetched at test time for the installed version.

They are not kept in this repository. `upstream_tests_dir()` returns a folder holding the files of the source
distribution of the installed transformers on the package registry: `tests/test_processing_common.py`,
`tests/test_image_processing_common.py`, the modules of the archive's `tests/` they import (none in 5.25.0) and
`LICENSE` (Apache 2.0, Copyright The HuggingFace Team). The folder is a cache outside the repository,
`${XGENMM_UPSTREAM_CACHE:-~/.cache/xgenmm/upstream-tests}/transformers-<version>/`; when it is absent,
`pip download --no-deps --no-binary :all: transformers==<version>` fetches the archive (pip checks its hash against
the registry's index) and only those files are taken out of it. `SOURCE.json` there records the archive's name and
sha256 and the sha256 of every file taken from it; `cache_differences` compares the folder with that record.

When the archive cannot be had (no network, no source distribution of that version, a timeout, a file missing from
it), `UpstreamTestsUnavailable` says what failed, for the mixin tests to skip with.
"""

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers


MIXIN_MODULES = ("test_processing_common", "test_image_processing_common")
LICENSE = "LICENSE"
RECORD = "SOURCE.json"
DOWNLOAD_TIMEOUT_S = 120


class UpstreamTestsUnavailable(RuntimeError):
    """The source distribution, or a file the mixins need from it, could not be had."""


def cache_root() -> Path:
    named = os.environ.get("XGENMM_UPSTREAM_CACHE")
    return Path(named) if named else Path.home() / ".cache" / "xgenmm" / "upstream-tests"


def upstream_tests_dir(version: str = transformers.__version__) -> Path:
    """The cached files of transformers `version`'s source distribution, downloading it the first time."""
    folder = cache_root() / f"transformers-{version}"
    if (folder / RECORD).is_file():
        return folder
    unavailable = f"transformers {version} source distribution unavailable"
    with tempfile.TemporaryDirectory(prefix="xgenmm-upstream-") as scratch:
        archive = download_sdist(version, Path(scratch))
        try:
            files = read_needed_files(archive, version)
        except (OSError, EOFError, tarfile.TarError) as error:
            raise UpstreamTestsUnavailable(f"{unavailable}: cannot read {archive.name}: {error}") from error
        record = {
            "transformers_version": version,
            "archive": archive.name,
            "archive_sha256": sha256(archive.read_bytes()),
            "fetched_with": f"pip download --no-deps --no-binary :all: transformers=={version}",
            "files": {name: sha256(data) for name, data in sorted(files.items())},
        }
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the cache folder and renamed into place, so a half-written folder is never used.
        partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        partial.chmod(0o755)  # mkdtemp's 0700 would keep a shared XGENMM_UPSTREAM_CACHE from other users
        for name, data in files.items():
            (partial / name).parent.mkdir(parents=True, exist_ok=True)
            (partial / name).write_bytes(data)
        (partial / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    except OSError as error:
        raise UpstreamTestsUnavailable(f"{unavailable}: cannot write the cache {folder}: {error}") from error
    differences = cache_differences(partial)
    if differences:
        raise RuntimeError(f"the files written to {partial} are not those of {record['archive']}: {differences}")
    try:
        partial.rename(folder)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (folder / RECORD).is_file():  # unless another run put its copy there first
            raise
    return folder


def download_sdist(version: str, folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    command += ["--disable-pip-version-check", f"transformers=={version}", "-d", str(folder)]
    unavailable = f"transformers {version} source distribution unavailable"
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise UpstreamTestsUnavailable(f"{unavailable}: pip download took over {DOWNLOAD_TIMEOUT_S} s") from error
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        cause = "; ".join(line for line in lines if line.startswith("ERROR")) or (lines[-1] if lines else "no output")
        warnings = [line for line in lines if line.startswith("WARNING")]
        if warnings:  # e.g. why the index could not be reached
            cause += f" (last warning: {warnings[-1][:300]})"
        raise UpstreamTestsUnavailable(f"{unavailable}: pip download exited with {result.returncode}: {cause}")
    archives = sorted(folder.glob(f"transformers-{version}.tar.gz"))
    if not archives:
        found = sorted(path.name for path in folder.iterdir())
        raise UpstreamTestsUnavailable(f"{unavailable}: pip download saved {found}, no transformers-{version}.tar.gz")
    return archives[0]


def read_needed_files(archive: Path, version: str) -> dict[str, bytes]:
    """The mixin modules, the modules of the archive's `tests/` they import, and LICENSE: path -> bytes."""
    with tarfile.open(archive, "r:gz") as tar:
        members = {member.name: member for member in tar.getmembers() if member.isfile()}
        top = f"transformers-{version}"

        def read(name: str) -> bytes:
            member = members.get(f"{top}/{name}")
            if member is None:
                raise UpstreamTestsUnavailable(
                    f"transformers {version} source distribution unavailable: {archive.name} has no {name}"
                )
            return tar.extractfile(member).read()

        files, pending = {LICENSE: read(LICENSE)}, list(MIXIN_MODULES)
        while pending:
            name = f"tests/{pending.pop()}.py"
            if name in files:
                continue
            files[name] = read(name)
            pending += [module for module in imported_modules(files[name]) if f"{top}/tests/{module}.py" in members]
    return files


def imported_modules(source: bytes) -> set[str]:
    """The first component of every module a file imports absolutely or from its own folder (`from .x import`)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level <= 1:
            names.add(node.module.split(".")[0])
    return names


def cache_differences(folder: Path) -> list[str]:
    """How the cached folder differs from what `SOURCE.json` recorded when its files were taken from the archive."""
    record = json.loads((folder / RECORD).read_text())
    present = {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.name != RECORD and "__pycache__" not in path.parts
    }
    differences = [f"{name}: missing" for name in sorted(set(record["files"]) - present)]
    differences += [f"{name}: not from the archive" for name in sorted(present - set(record["files"]))]
    differences += [
        f"{name}: sha256 differs from the archive's"
        for name, digest in record["files"].items()
        if name in present and sha256((folder / name).read_bytes()) != digest
    ]
    return differences


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
