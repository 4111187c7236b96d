"""Test configuration: no test may reach beyond this machine."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from anthropic_server import anthropic_server  # noqa: F401 - fixtures for every test module
from openai_server import openai_server  # noqa: F401

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check(address: Any) -> None:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        try:
            loopback = ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ConnectionRefusedError(f"tests may only connect to loopback, not {host!r}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check(address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check(address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse any connection that is not to 127.0.0.0/8 or ::1, so no test calls a real API."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)


@pytest.fixture
def dagcall_program() -> str:
    """The installed ``dagcall`` program (a skip where the package is not installed)."""
    import shutil

    program = shutil.which("dagcall")
    if program is None:
        pytest.skip("the dagcall program is not installed (pip install -e .)")
    return program
