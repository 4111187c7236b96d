"""What the HTTP providers share: URL checks, secret-free messages and causes, error wording.

Provider SDK exceptions are never kept: they hold the request (with the API key in its
headers), the raw response (which some servers echo the key in) and the frames that built
them.  A failed call raises dagcall's :class:`~dagcall.ModelError` with scrubbed text, whose
``__cause__`` is a :class:`ProviderError` made by :func:`provider_error`: the SDK error's type,
status code, request id, how many requests were made and its scrubbed message, and nothing
else.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

import httpx2

from .._errors import UsageError

__all__ = [
    "MAX_RETRY_AFTER",
    "ProviderError",
    "Secrets",
    "check_base_url",
    "plural",
    "provider_error",
    "redact_url",
    "requests_made",
    "response_hook",
    "retry_after",
    "retry_refused",
    "scrub",
    "tries_text",
    "url_secrets",
    "with_cause",
]

#: Shorter "keys" (placeholders, test values) are not secrets and would match ordinary words.
_MIN_SECRET = 8
#: Any run of this many characters of a secret (or of its encoded forms) is masked, so a key
#: that is echoed cut short, or is part of a longer token, is masked too.
_FRAGMENT = 16
#: The longest ``Retry-After`` (seconds) that dagcall's own clients wait for before retrying;
#: an answer asking for longer is not retried (the SDKs would otherwise sleep that long).
MAX_RETRY_AFTER = 60.0
#: The most characters of an SDK error's text kept in a :class:`ProviderError`.
_CAUSE_LIMIT = 2000
#: The most links of an SDK error's own cause chain summarised in a ProviderError.
_CHAIN_LIMIT = 5
_RETRY_COUNT_HEADER = "x-stainless-retry-count"  # set by both SDKs on every attempt
_RETRYABLE = frozenset({408, 409, 429})

_E = TypeVar("_E", bound=BaseException)


def _forms(secret: str) -> set[str]:
    """``secret`` as it may appear in text: raw, URL-encoded, JSON- or repr-escaped."""
    escaped = json.dumps(secret)[1:-1]
    return {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        escaped,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        escaped.replace("/", "\\/"),
        repr(secret)[1:-1],
    }


class Secrets:
    """The secrets of one provider client, and a mask for them in any text.

    :meth:`scrub` replaces every occurrence of a secret, of its URL-encoded and JSON- or
    repr-escaped forms, and of any run of 16 or more of their characters (a key echoed cut
    short, or inside a longer token) with ``***``.  Secrets shorter than 8 characters are
    placeholders, not secrets, and are left alone.
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if isinstance(secret, str) and len(secret) >= _MIN_SECRET:
                forms |= {f for f in _forms(secret) if len(f) >= _MIN_SECRET}
        self._forms = tuple(sorted(forms, key=len, reverse=True))
        pieces: set[str] = set()
        for form in self._forms:
            if len(form) <= _FRAGMENT:
                pieces.add(form)
            else:
                pieces.update(form[i : i + _FRAGMENT] for i in range(len(form) - _FRAGMENT + 1))
        self._pieces = tuple(pieces)

    def __repr__(self) -> str:
        return f"<Secrets: {len(self._forms)} forms masked>"

    def __bool__(self) -> bool:
        return bool(self._pieces)

    def scrub(self, text: str, limit: int | None = None) -> str:
        """``text`` with the secrets masked; with ``limit``, at most that many characters of
        it (ending in ``...`` when cut), and only those are searched."""
        if limit is not None and len(text) > limit:
            # Cut past the limit, mask, then drop the tail: a key cut in two at the first cut
            # leaves under _FRAGMENT characters of itself there, unmasked, and they go.
            masked = self._mask(text[: limit + _FRAGMENT])
            return masked[: min(limit, len(masked) - _FRAGMENT) - 3] + "..."
        return self._mask(text)

    def _mask(self, text: str) -> str:
        if not self._pieces:
            return text
        covered = bytearray(len(text))
        for piece in self._pieces:
            start = text.find(piece)
            while start >= 0:
                covered[start : start + len(piece)] = b"\x01" * len(piece)
                start = text.find(piece, start + 1)
        if not any(covered):
            return text
        out: list[str] = []
        masking = False
        for char, hidden in zip(text, covered, strict=True):
            if hidden:
                if not masking:
                    out.append("***")
                masking = True
            else:
                out.append(char)
                masking = False
        return "".join(out)


def scrub(text: str, secret: str) -> str:
    """``text`` with ``secret`` (an API key) masked as ``***`` (see :class:`Secrets`)."""
    return Secrets([secret]).scrub(text)


def url_secrets(url: str | None) -> list[str]:
    """The password (and user name) of a ``user:password@`` part of ``url``, if any."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        found = [parts.password, parts.username]
    except ValueError:
        return []
    return [s for s in found if s]


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


# -- what a failed request says ---------------------------------------------------------------


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """The wait (seconds) that ``Retry-After-Ms`` or ``Retry-After`` asks for, read as the
    SDKs read them; ``None`` when there is none or it cannot be read."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            delay = float(value) / divisor
        except ValueError:
            continue
        return delay if not math.isnan(delay) else None
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else float(email.utils.mktime_tz(parsed) - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def response_hook(secrets: Secrets) -> Callable[[httpx2.Response], Awaitable[None]]:
    """An httpx2 response hook for dagcall's own SDK clients.

    Header values echoing a secret are masked before the SDK reads (or logs) them, and an
    answer whose ``Retry-After`` is longer than :data:`MAX_RETRY_AFTER` gets
    ``x-should-retry: false``, so the SDK gives up at once instead of sleeping that long (the
    Anthropic SDK would wait however long it is asked to).
    """

    async def hook(response: httpx2.Response) -> None:
        items = response.headers.multi_items()
        masked = [(name, secrets.scrub(value)) for name, value in items]
        if masked != items:
            response.headers = httpx2.Headers(masked)
        wait = retry_after(response.headers)
        if wait is not None and wait > MAX_RETRY_AFTER:
            response.headers["x-should-retry"] = "false"

    return hook


def requests_made(exc: BaseException) -> int | None:
    """How many requests the SDK sent for the call that failed with ``exc`` (the retry count
    it put on its last request, plus one), or ``None`` when that is not known."""
    request = None
    response = getattr(exc, "response", None)
    if isinstance(response, httpx2.Response):
        try:
            request = response.request
        except RuntimeError:  # a response built without its request
            request = None
    if request is None:
        try:
            request = getattr(exc, "request", None)
        except RuntimeError:
            request = None
    if not isinstance(request, httpx2.Request):
        return None
    try:
        count = int(request.headers.get(_RETRY_COUNT_HEADER, ""))
    except ValueError:
        return None
    return count + 1 if count >= 0 else None


def _wait_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:g} s"


def tries_text(
    exc: BaseException, status: int | None, max_retries: int, *, own_client: bool = True
) -> str:
    """What was tried, as a clause to append to a message: `` after 1 retry (2 requests
    made)``, ``, 1 request made (max_retries=0)`` or ``, 1 request made, not retried: the
    server asked to retry after 3600 s, ...``; ``""`` when the count is not known, or for a
    single request with an answer that is never retried (HTTP 400, 401, ...).

    ``status`` is the answer's HTTP status (``None`` for no answer); ``own_client`` says the
    request went through dagcall's own client (with :func:`response_hook`).
    """
    made = requests_made(exc)
    if made is None:
        return ""
    if made > 1:
        return f" after {plural(made - 1, 'retry')} ({plural(made, 'request')} made)"
    if status is not None and status not in _RETRYABLE and status < 500:
        return ""
    text = ", 1 request made"
    if max_retries == 0:
        return f"{text} (max_retries=0)"
    response = getattr(exc, "response", None)
    headers = response.headers if isinstance(response, httpx2.Response) else None
    wait = retry_after(headers)
    if wait is not None and wait > MAX_RETRY_AFTER:
        limit = f"dagcall waits ({_wait_text(MAX_RETRY_AFTER)})" if own_client else "the SDK waits"
        return (
            f"{text}, not retried: the server asked to retry after {_wait_text(wait)}, which is "
            f"longer than {limit}"
        )
    if headers is not None and headers.get("x-should-retry") == "false":
        return f"{text}, not retried: the server said not to (x-should-retry: false)"
    return text


def with_cause(error: _E, exc: BaseException, secrets: Secrets) -> _E:
    """``error`` with a :class:`ProviderError` standing in for ``exc`` as its ``__cause__``
    (raise it outside the ``except`` block, so that ``exc`` is not its ``__context__``)."""
    error.__cause__ = provider_error(exc, secrets)
    return error


def retry_refused(exc: BaseException) -> bool:
    """Whether ``exc``'s answer asked for a wait longer than :data:`MAX_RETRY_AFTER`."""
    response = getattr(exc, "response", None)
    if not isinstance(response, httpx2.Response):
        return False
    wait = retry_after(response.headers)
    return wait is not None and wait > MAX_RETRY_AFTER


# -- the sanitised cause ------------------------------------------------------------------------


def _type_name(cls: type[BaseException]) -> str:
    package = cls.__module__.partition(".")[0]
    return cls.__qualname__ if package == "builtins" else f"{package}.{cls.__qualname__}"


class ProviderError(Exception):
    """What a provider SDK raised, as scrubbed text: the ``__cause__`` of a ModelError.

    ``error_type`` names the SDK's exception class (``"openai.AuthenticationError"``) and
    ``error_class`` is that class, for ``issubclass`` checks; ``status_code``, ``request_id``
    and ``requests`` (how many requests were sent, retries included) are ``None`` when not
    known; ``message`` is the error's text, and that of the errors it was raised from, with
    the API key masked.  It holds no SDK object, request, response or frame.
    """

    def __init__(
        self,
        error_class: type[BaseException],
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        requests: int | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.error_type = _type_name(error_class)
        self.message = message
        self.status_code = status_code
        self.request_id = request_id
        self.requests = requests

    def __str__(self) -> str:
        facts = []
        if self.status_code is not None:
            facts.append(f"HTTP {self.status_code}")
        if self.request_id:
            facts.append(f"request id {self.request_id}")
        if self.requests is not None:
            facts.append(plural(self.requests, "request"))
        head = f"{self.error_type} ({', '.join(facts)})" if facts else self.error_type
        return f"{head}: {self.message}" if self.message else head

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        facts = {"status_code": self.status_code, "request_id": self.request_id}
        return (_rebuild, (self.error_class, self.message, facts, self.requests))


def _rebuild(
    error_class: type[BaseException], message: str, facts: dict[str, Any], requests: int | None
) -> ProviderError:
    return ProviderError(error_class, message, requests=requests, **facts)


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not hide the failure
        return ""


def provider_error(exc: BaseException, secrets: Secrets) -> ProviderError:
    """A :class:`ProviderError` standing in for ``exc`` (an SDK or transport error): its
    type, status code, request id, request count and the scrubbed text of ``exc`` and of the
    errors it was raised from."""
    parts: list[str] = []
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen and len(seen) < _CHAIN_LIMIT:
        seen.add(id(link))
        text = secrets.scrub(_text(link), _CAUSE_LIMIT).strip()
        parts.append(text if link is exc else f"{_type_name(type(link))}: {text}".rstrip(": "))
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    message = " <- ".join(p for p in parts if p)  # masked already: cutting it shows nothing new
    if len(message) > _CAUSE_LIMIT:
        message = message[: _CAUSE_LIMIT - 3] + "..."
    status = getattr(exc, "status_code", None)
    request_id: Any = getattr(exc, "request_id", None)
    return ProviderError(
        type(exc),
        message,
        status_code=status if isinstance(status, int) and not isinstance(status, bool) else None,
        request_id=secrets.scrub(request_id, 200) if isinstance(request_id, str) else None,
        requests=requests_made(exc),
    )
