"""What the HTTP providers share: URL checks, secret-free messages, error wording."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from .._errors import UsageError

__all__ = ["check_base_url", "plural", "redact_url", "scrub"]

#: Shorter "keys" (placeholders, test values) are not secrets and would match ordinary words.
_MIN_SECRET = 8


def scrub(text: str, secret: str) -> str:
    """``text`` with ``secret`` (an API key) replaced by ``***``."""
    return text.replace(secret, "***") if len(secret) >= _MIN_SECRET else text


def redact_url(url: str) -> str:
    """``url`` without any ``user:password@`` part."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, "***@" + host, parts.path, parts.query, parts.fragment))


def check_base_url(base_url: str) -> None:
    if not base_url.strip():
        raise UsageError("base_url must not be empty; omit it to use the provider's own API")
    try:
        parts = urlsplit(base_url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    else:
        if parts.scheme in ("http", "https") and parts.hostname and port_ok:
            return
    raise UsageError(
        f"base_url {redact_url(base_url)!r} is not an http(s) URL with a host and a valid "
        "port; write it like 'http://127.0.0.1:8000/v1'"
    )


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"
