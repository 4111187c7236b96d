"""wikipedia: the live Wikipedia API over ``httpx2``: search, then the best page's intro."""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import quote

import httpx2

from .._errors import ToolError, ToolExecutionError, UsageError
from .._tools import Tool

__all__ = ["wikipedia", "wikipedia_tool"]

MAX_CHARS = 1500  # of the introduction returned; whole paragraphs while they fit
_LANGUAGE = re.compile(r"[a-z][a-z0-9-]{1,30}")


def _user_agent() -> str:
    from .. import __version__

    return f"dagcall/{__version__} (+https://pypi.org/project/dagcall/)"


def _intro(extract: str, limit: int = MAX_CHARS) -> str:
    """The first paragraphs of ``extract`` that fit in ``limit`` characters (at least part of
    the first one, cut between words)."""
    paragraphs = [" ".join(p.split()) for p in extract.split("\n")]
    paragraphs = [p for p in paragraphs if p]
    kept: list[str] = []
    used = 0
    for paragraph in paragraphs:
        if kept and used + len(paragraph) > limit:
            break
        kept.append(paragraph)
        used += len(paragraph) + 1
    text = "\n".join(kept)
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " …"
    return text


def _first_page(data: Any) -> dict[str, Any]:
    """The first page of an ``action=query`` reply (``pages`` is a dict in format version 1
    and a list in version 2)."""
    pages = ((data.get("query") or {}) if isinstance(data, dict) else {}).get("pages") or []
    if isinstance(pages, dict):
        pages = list(pages.values())
    first = pages[0] if pages else {}
    return first if isinstance(first, dict) else {}


def wikipedia_tool(
    *,
    language: str = "en",
    base_url: str | None = None,
    timeout: float = 15.0,
    connect_timeout: float = 5.0,
    name: str = "wikipedia",
) -> Tool:
    """A tool ``wikipedia(query) -> str``: the title, introduction (at most ~1500 characters)
    and address of the Wikipedia article that best matches ``query``.

    It searches ``https://{language}.wikipedia.org`` (or ``base_url``, any MediaWiki site)
    with ``action=query&list=search`` and reads the best page's plain-text intro.  ``timeout``
    bounds the whole lookup in seconds, ``connect_timeout`` each connection.  An unreachable
    site, a timeout, an HTTP error status or no matching article raise
    :class:`~dagcall.ToolExecutionError` saying which, so the joiner sees why.
    """
    if base_url is None and not _LANGUAGE.fullmatch(language):
        raise UsageError(f"wikipedia_tool: {language!r} is not a Wikipedia language code")
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise UsageError(f"wikipedia_tool: base_url must start with https://, not {base_url!r}")
    if timeout <= 0 or connect_timeout <= 0:
        raise UsageError("wikipedia_tool: timeouts must be positive")
    site = (base_url or f"https://{language}.wikipedia.org").rstrip("/")
    api = f"{site}/w/api.php"
    limits = httpx2.Timeout(timeout, connect=min(connect_timeout, timeout))

    def fail(message: str) -> ToolExecutionError:
        return ToolExecutionError(message, tool=name)

    async def get(client: httpx2.AsyncClient, params: dict[str, str]) -> Any:
        try:
            response = await client.get(api, params={**params, "format": "json"})
        except httpx2.ConnectTimeout as exc:
            raise fail(
                f"Wikipedia ({site}) could not be reached: no connection within "
                f"{connect_timeout:g} s; the {name} tool needs network access"
            ) from exc
        except httpx2.TimeoutException as exc:
            raise fail(f"Wikipedia ({site}) did not answer within {timeout:g} s") from exc
        except httpx2.TransportError as exc:
            raise fail(
                f"Wikipedia ({site}) could not be reached ({type(exc).__name__}: {exc}); "
                f"the {name} tool needs network access"
            ) from exc
        status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
        if response.status_code == 429:
            raise fail(f"Wikipedia rate-limited the request ({status}); retry later")
        if response.status_code >= 400:
            raise fail(f"Wikipedia answered {status}")
        try:
            data = response.json()
        except ValueError:
            raise fail(f"Wikipedia ({api}) sent a reply that is not JSON") from None
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            raise fail(f"Wikipedia refused the request: {error.get('info') or error}")
        return data

    async def lookup(client: httpx2.AsyncClient, query: str) -> str:
        found = await get(
            client,
            {"action": "query", "list": "search", "srsearch": query, "srlimit": "1"},
        )
        hits = ((found.get("query") or {}) if isinstance(found, dict) else {}).get("search")
        if not hits:
            raise fail(f"no Wikipedia article matches {query!r}")
        title = (
            str(hits[0].get("title") or "")
            if isinstance(hits, list) and isinstance(hits[0], dict)
            else ""
        )
        if not title:
            raise fail(f"Wikipedia's search for {query!r} gave a result without a title")
        pages = await get(
            client,
            {
                "action": "query",
                "prop": "extracts|info",
                "inprop": "url",
                "exintro": "1",
                "explaintext": "1",
                "redirects": "1",
                "titles": title,
            },
        )
        page = _first_page(pages)
        title = str(page.get("title") or title)
        intro = _intro(str(page.get("extract") or ""))
        if not intro:
            raise fail(f"the Wikipedia article {title!r} has no introduction")
        url = page.get("fullurl") or f"{site}/wiki/{quote(title.replace(' ', '_'))}"
        return f"{title}: {intro}\n(source: {url})"

    async def wikipedia(query: str) -> str:
        if not query.strip():
            raise ToolError(f"{name} needs a non-empty query", tool=name)
        headers = {"User-Agent": _user_agent()}
        async with httpx2.AsyncClient(
            timeout=limits, headers=headers, follow_redirects=True
        ) as client:
            try:
                async with asyncio.timeout(timeout) as scope:
                    return await lookup(client, query.strip())
            except TimeoutError:
                if not scope.expired():
                    raise
                raise fail(f"Wikipedia ({site}) did not answer within {timeout:g} s") from None

    wikipedia.__doc__ = (
        "Look the query up on Wikipedia (a name or a few keywords work best) and return the "
        "introduction of the best-matching article, with its address."
    )
    return Tool(wikipedia, name=name, timeout=timeout + 5)


#: The English Wikipedia, with the default timeouts.
wikipedia = wikipedia_tool()
