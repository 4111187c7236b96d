"""End-to-end tests with the real embedded model.

They run by default when the local extra is installed (CI installs it), and can be run alone
with ``python -m pytest -m local_model``.  Where the extra is missing they skip, unless
``DAGCALL_REQUIRE_LOCAL=1`` (set by CI) makes that a failure.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from dagcall import ModelNotAvailableError


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.local_model)


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """The assembled embedded model, or a skip (a failure under DAGCALL_REQUIRE_LOCAL=1)."""
    required = os.environ.get("DAGCALL_REQUIRE_LOCAL") == "1"
    try:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ModelNotAvailableError("llama-cpp-python is not installed")
        from dagcall.models._weights import default_model_path

        return default_model_path()
    except ModelNotAvailableError as exc:
        if required:
            pytest.fail(f"DAGCALL_REQUIRE_LOCAL=1 but the local model is unavailable: {exc}")
        pytest.skip(f"the local model is not installed ({exc}); pip install -e '.[local]'")
