"""MCP servers from the configuration users already have, and from one ``--mcp`` argument.

The file is the one MCP clients read (Claude Desktop, Cursor, Windsurf, Cline; VS Code's
``.vscode/mcp.json`` names its table ``servers``)::

    {"mcpServers": {
        "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}},
        "search": {"url": "https://example.com/mcp",
                   "headers": {"Authorization": "Bearer ${env:SEARCH_TOKEN}"}}}}
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._errors import UsageError
from .._tools import _safe_text
from ._client import MCPToolset

__all__ = ["from_spec", "load_config"]

_STDIO_TYPES = frozenset({"stdio", "local"})
_HTTP_TYPES = frozenset({"http", "streamable-http", "streamable_http", "streamableHttp", "remote"})

#: Keys other MCP clients write that mean nothing here; they are accepted and ignored.
_IGNORED_KEYS = frozenset(
    {
        "autoApprove",
        "alwaysAllow",
        "description",
        "disabledTools",
        "icon",
        "note",
        "notes",
        "title",
        "gallery",
        "version",
    }
)

#: dagcall's own keys (``MCPToolset`` options), in camelCase or snake_case.
_OPTION_KEYS = {
    "prefix": "prefix",
    "timeout": "timeout",
    "connectTimeout": "connect_timeout",
    "connect_timeout": "connect_timeout",
    "maxConcurrency": "max_concurrency",
    "max_concurrency": "max_concurrency",
    "include": "include",
    "exclude": "exclude",
    "sideEffects": "side_effects",
    "side_effects": "side_effects",
    "inheritEnv": "inherit_env",
    "inherit_env": "inherit_env",
}

_STDIO_KEYS = frozenset({"command", "args", "env", "cwd"})
_HTTP_KEYS = frozenset({"url", "headers"})
_KNOWN = (
    _STDIO_KEYS | _HTTP_KEYS | set(_OPTION_KEYS) | _IGNORED_KEYS | {"type", "transport", "disabled"}
)

_VARIABLE = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}")


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any], **options: Any
) -> list[MCPToolset]:
    """The servers of an MCP client configuration, as toolsets (not yet opened).

    ``source`` is the path of a JSON file or the parsed mapping: ``{"mcpServers": {NAME:
    SERVER}}`` (or ``{"servers": ...}`` as VS Code writes it).  A stdio server has
    ``command`` and optionally ``args``, ``env`` and ``cwd``; an HTTP server ``url`` and
    optionally ``headers``; ``type`` (or ``transport``) may say which: ``stdio``, ``http`` or
    ``streamable-http`` (``sse`` is not supported).  A server with ``"disabled": true`` is
    left out.  ``${NAME}`` and ``${env:NAME}`` in strings are replaced by that environment
    variable.  dagcall's own options may be given per server (``prefix``, ``timeout``,
    ``connectTimeout``, ``maxConcurrency``, ``include``, ``exclude``, ``sideEffects``,
    ``inheritEnv``) and for all of them as keyword arguments (the server's win).  Keys other
    MCP clients write (``autoApprove``, ``alwaysAllow``, ``description``) are ignored; any
    other key is a :class:`~dagcall.UsageError` naming the server and the key, as is every
    malformed value.
    """
    where = "the MCP configuration"
    if not isinstance(source, str | os.PathLike):
        data: Any = source
    else:
        path = Path(source)
        where = f"the MCP configuration {str(path)!r}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {where}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{where} is not UTF-8 text") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
            ) from None
    if not isinstance(data, Mapping):
        raise UsageError(f'{where} must be a JSON object with an "mcpServers" object')
    key = "mcpServers" if "mcpServers" in data else "servers" if "servers" in data else None
    if key is None:
        raise UsageError(f'{where} has no "mcpServers" object')
    servers = data[key]
    if not isinstance(servers, Mapping):
        raise UsageError(f'{where}: "{key}" must be an object of servers by name')
    toolsets = []
    for name, entry in servers.items():
        ts = _server(where, str(name), entry, options)
        if ts is not None:
            toolsets.append(ts)
    return toolsets


def _server(where: str, name: str, entry: object, defaults: Mapping[str, Any]) -> MCPToolset | None:
    def bad(text: str) -> UsageError:
        return UsageError(f"{where}: server {name!r}: {text}")

    if not isinstance(entry, Mapping):
        raise bad('must be an object with "command" or "url"')
    unknown = [k for k in entry if k not in _KNOWN]
    if unknown:
        raise bad(
            f"unknown key {_safe_text(unknown[0], 60, use_repr=True)}; a server has "
            '"command", "args", "env", "cwd" (stdio) or "url", "headers" (HTTP), '
            f'"type", and dagcall\'s options {", ".join(sorted(set(_OPTION_KEYS.values())))}'
        )
    disabled = entry.get("disabled", False)
    if not isinstance(disabled, bool):
        raise bad('"disabled" must be true or false')
    if disabled:
        return None
    kind = entry.get("type", entry.get("transport"))
    if kind is not None:
        if not isinstance(kind, str):
            raise bad('"type" must be a string')
        if kind == "sse":
            raise bad("the SSE transport is not supported; use the server's streamable HTTP URL")
        if kind not in _STDIO_TYPES | _HTTP_TYPES:
            raise bad(f'unknown "type" {kind!r}; use "stdio", "http" or "streamable-http"')
    has_command, has_url = "command" in entry, "url" in entry
    if has_command and has_url:
        raise bad('has both "command" and "url"; give one')
    if not has_command and not has_url:
        raise bad('needs "command" (a stdio server) or "url" (an HTTP server)')
    if kind in _STDIO_TYPES and not has_command:
        raise bad(f'is of type {kind!r} but has no "command"')
    if kind in _HTTP_TYPES and not has_url:
        raise bad(f'is of type {kind!r} but has no "url"')
    stray = (_HTTP_KEYS if has_command else _STDIO_KEYS) & set(entry)
    if stray:
        raise bad(
            f'"{sorted(stray)[0]}" is for {"an HTTP" if has_command else "a stdio"} server, '
            f"and this one has {'a command' if has_command else 'a url'}"
        )

    def string(key: str) -> str:
        value = entry[key]
        if not isinstance(value, str) or not value.strip():
            raise bad(f'"{key}" must be a non-empty string')
        return _expand(value, key, bad)

    def strings(key: str) -> list[str]:
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad(f'"{key}" must be a list of strings')
        return [_expand(v, key, bad) for v in value]

    def table(key: str) -> dict[str, str]:
        value = entry.get(key, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise bad(f'"{key}" must be an object of strings')
        return {k: _expand(v, f"{key}.{k}", bad) for k, v in value.items()}

    options: dict[str, Any] = dict(defaults)
    for key, option in _OPTION_KEYS.items():
        if key not in entry:
            continue
        value = entry[key]
        if option in ("include", "exclude", "inherit_env"):
            value = strings(key)
        elif option == "prefix" and not isinstance(value, str):
            raise bad('"prefix" must be a string')
        elif (
            option in ("timeout", "connect_timeout")
            and value is not None
            and (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0)
        ):
            raise bad(f'"{key}" must be a positive number of seconds')
        elif (
            option == "max_concurrency"
            and value is not None
            and (isinstance(value, bool) or not isinstance(value, int) or value < 1)
        ):
            raise bad(f'"{key}" must be a whole number of at least 1')
        elif option == "side_effects" and value is not None and not isinstance(value, bool):
            raise bad(f'"{key}" must be true, false or null')
        options[option] = value
    try:
        if has_command:
            cwd = string("cwd") if "cwd" in entry else None
            return MCPToolset(
                command=string("command"),
                args=strings("args"),
                env=table("env"),
                cwd=cwd,
                name=name,
                **options,
            )
        return MCPToolset(url=string("url"), headers=table("headers"), name=name, **options)
    except UsageError as exc:
        raise bad(exc.message.removeprefix("MCPToolset: ")) from None
    except TypeError as exc:  # an unknown keyword option
        raise UsageError(f"load_config: {exc}") from None


def _expand(value: str, key: str, bad: Any) -> str:
    def variable(match: re.Match[str]) -> str:
        found = os.environ.get(match.group(1))
        if found is None:
            raise bad(f'"{key}" uses ${{{match.group(1)}}}, which is not set')
        return found

    return _VARIABLE.sub(variable, value)


def from_spec(spec: str, **options: Any) -> MCPToolset:
    """One server from a command-line argument: a URL (``https://host/mcp``) is an HTTP
    server; anything else a command line, split like a POSIX shell splits it
    (``"uvx mcp-server-time --local-timezone UTC"``).  ``options`` are
    :class:`MCPToolset`'s."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("an MCP server must be a command line or an http(s):// URL, not empty")
    text = spec.strip()
    if text.lower().startswith(("http://", "https://")):
        return MCPToolset(url=text, **options)
    try:
        parts = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot split the MCP server command {text!r}: {exc}") from None
    return MCPToolset(command=parts[0], args=parts[1:], **options)
