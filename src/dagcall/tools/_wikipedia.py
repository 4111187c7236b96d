"""wikipedia: the live Wikipedia API over ``httpx``: search, then the best page's intro."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from .._errors import ToolError
from .._tools import Tool

__all__ = ["wikipedia", "wikipedia_tool"]

_MAX_CHARS = 1500


def _user_agent() -> str:
    from .. import __version__

    return f"dagcall/{__version__} (+https://pypi.org/project/dagcall/)"


def wikipedia_tool(
    *,
    language: str = "en",
    base_url: str | None = None,
    timeout: float = 15.0,
    name: str = "wikipedia",
) -> Tool:
    """A tool ``wikipedia(query)``: the intro of the Wikipedia article that best matches."""
    site = base_url or f"https://{language}.wikipedia.org"
    api = site.rstrip("/") + "/w/api.php"

    async def get(client: httpx.AsyncClient, params: dict[str, str]) -> Any:
        try:
            response = await client.get(api, params={**params, "format": "json"})
        except httpx.TimeoutException:
            raise ToolError(
                f"Wikipedia ({site}) did not answer within {timeout:g} s", tool=name
            ) from None
        except httpx.TransportError as exc:
            raise ToolError(
                f"Wikipedia ({site}) could not be reached ({type(exc).__name__}: {exc}); "
                "the wikipedia tool needs network access",
                tool=name,
            ) from None
        if response.status_code == 429:
            raise ToolError("Wikipedia rate-limited the request (HTTP 429); retry later", tool=name)
        if response.status_code >= 400:
            raise ToolError(f"Wikipedia answered HTTP {response.status_code}", tool=name)
        try:
            return response.json()
        except ValueError:
            raise ToolError("Wikipedia sent a reply that is not JSON", tool=name) from None

    async def wikipedia(query: str) -> str:
        if not query.strip():
            raise ToolError("wikipedia needs a non-empty query", tool=name)
        limits = httpx.Timeout(timeout, connect=min(5.0, timeout))
        headers = {"User-Agent": _user_agent()}
        async with httpx.AsyncClient(timeout=limits, headers=headers) as client:
            found = await get(
                client, {"action": "query", "list": "search", "srsearch": query, "srlimit": "1"}
            )
            hits = (found.get("query") or {}).get("search") or []
            if not hits:
                raise ToolError(f"no Wikipedia article matches {query!r}", tool=name)
            title = str(hits[0]["title"])
            pages = await get(
                client,
                {
                    "action": "query",
                    "prop": "extracts",
                    "exintro": "1",
                    "explaintext": "1",
                    "redirects": "1",
                    "titles": title,
                },
            )
        page: dict[str, Any] = next(
            iter(((pages.get("query") or {}).get("pages") or {}).values()), {}
        )
        extract = " ".join(str(page.get("extract") or "").split())
        if not extract:
            raise ToolError(f"the Wikipedia article {title!r} has no introduction", tool=name)
        if len(extract) > _MAX_CHARS:
            extract = extract[:_MAX_CHARS].rsplit(" ", 1)[0] + " …"
        url = f"{site.rstrip('/')}/wiki/{quote(title.replace(' ', '_'))}"
        return f"{page.get('title', title)}: {extract}\n(source: {url})"

    wikipedia.__doc__ = (
        "Look the query up on Wikipedia and return the introduction of the best-matching "
        "article, with its address."
    )
    return Tool(wikipedia, name=name, timeout=2 * timeout + 5)


wikipedia = wikipedia_tool()
