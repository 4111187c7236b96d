"""dagcall as an HTTP service: runs with streamed events, OpenAI's chat completions API.

:func:`create_app` makes the ASGI app (FastAPI) for a compiler: ``POST /v1/runs`` starts a
run, ``GET /v1/runs/{id}/events`` streams its events as server-sent events (resumable with
``Last-Event-ID``), ``GET /v1/runs/{id}`` gives it as the typed schema's JSON, ``GET /v1/runs``
lists, ``DELETE /v1/runs/{id}`` cancels; ``POST /v1/chat/completions`` answers OpenAI clients;
``/healthz`` and ``/readyz`` are the probes.  :func:`serve` runs it with uvicorn
(:class:`Server`, which cancels and saves live runs at shutdown).  The ``service`` extra
installs what it needs (``pip install 'dagcall[service]'``); docs/service.md has the details.
"""

try:
    import fastapi  # noqa: F401
    import sse_starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"dagcall.service needs the service extra ({exc.name} is missing): "
        "pip install 'dagcall[service]'"
    ) from exc

from ._app import STATIC_DIR, create_app
from ._runs import RunManager
from ._server import TOKEN_ENV, Server, serve

__all__ = ["STATIC_DIR", "TOKEN_ENV", "RunManager", "Server", "create_app", "serve"]
