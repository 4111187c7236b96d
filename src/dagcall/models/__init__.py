"""Model back ends behind one provider-neutral :class:`Model` interface."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._errors import UsageError
from ._base import (
    Completion,
    Message,
    Model,
    StopFilter,
    TokenUsage,
    ToolCall,
    complete,
    complete_with_tools,
)
from ._scripted import ScriptedCall, ScriptedModel

if TYPE_CHECKING:
    from ._anthropic import AnthropicModel
    from ._local import LocalModel
    from ._openai import OpenAIModel

__all__ = [
    "ENTRY_POINT_GROUP",
    "AnthropicModel",
    "Completion",
    "LocalModel",
    "Message",
    "Model",
    "OpenAIModel",
    "ScriptedCall",
    "ScriptedModel",
    "StopFilter",
    "TokenUsage",
    "ToolCall",
    "complete",
    "complete_with_tools",
    "default_model_spec",
    "model_providers",
    "register_model_provider",
    "resolve_model",
]

DEFAULT_MODEL = "local"

#: A model provider: given what follows ``prefix:`` in a model string, the model it names.
ModelFactory = Callable[[str], Model]

_providers: dict[str, ModelFactory] = {}
_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def register_model_provider(prefix: str, factory: ModelFactory, *, replace: bool = False) -> None:
    """Make ``resolve_model("PREFIX:REST")`` return ``factory("REST")`` (and a bare
    ``"PREFIX"`` return ``factory("")``).

    ``prefix`` is a name such as ``"simulated"`` (a letter, then letters, digits, ``_``, ``.``
    or ``-``).  Registering a prefix that is taken raises UsageError unless ``replace=True``.
    The factory raises UsageError for a string it cannot use; it must return a Model.
    """
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise UsageError(
            f"a model provider prefix is a name like 'simulated' (a letter, then letters, "
            f"digits, '_', '.' or '-'), not {prefix!r}"
        )
    if not callable(factory):
        raise UsageError(f"the factory for model provider {prefix!r} must be callable")
    if prefix in _providers and not replace:
        raise UsageError(
            f"model provider {prefix!r} is already registered; pass replace=True to replace it"
        )
    _providers[prefix] = factory


#: The entry-point group where installed packages name their model providers, e.g. in their
#: pyproject: ``[project.entry-points."dagcall.model_providers"] mine = "pkg.module:factory"``.
ENTRY_POINT_GROUP = "dagcall.model_providers"


def _plugin(prefix: str) -> ModelFactory | None:
    """The factory an installed package declares for ``prefix`` (loaded and registered on
    first use), or ``None``."""
    if not prefix or not _PREFIX.fullmatch(prefix):
        return None
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP, name=prefix):
        try:
            factory = point.load()
        except Exception as exc:
            raise UsageError(
                f"model provider {prefix!r} (entry point {point.value}) could not be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        register_model_provider(prefix, factory, replace=True)
        return _providers[prefix]
    return None


def model_providers() -> tuple[str, ...]:
    """The registered model string prefixes and those installed packages declare, sorted."""
    from importlib.metadata import entry_points

    declared = {point.name for point in entry_points(group=ENTRY_POINT_GROUP)}
    return tuple(sorted(set(_providers) | declared))


def _local(rest: str) -> Model:
    from ._local import LocalModel

    return LocalModel(rest) if rest else LocalModel()


def _openai(rest: str) -> Model:
    from ._openai import OpenAIModel
    from ._provider import split_server

    name, base_url = split_server("openai", rest)
    return OpenAIModel(name, base_url=base_url)


def _anthropic(rest: str) -> Model:
    from ._anthropic import AnthropicModel
    from ._provider import split_server

    name, base_url = split_server("anthropic", rest)
    return AnthropicModel(name, base_url=base_url)


register_model_provider("local", _local)
register_model_provider("openai", _openai)
register_model_provider("anthropic", _anthropic)


def __getattr__(name: str) -> object:
    # Provider SDKs are imported only when a model of theirs is used.
    if name == "OpenAIModel":
        from ._openai import OpenAIModel

        return OpenAIModel
    if name == "AnthropicModel":
        from ._anthropic import AnthropicModel

        return AnthropicModel
    if name == "LocalModel":
        from ._local import LocalModel

        return LocalModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_model_spec() -> str:
    """The model used when none is given: ``DAGCALL_MODEL``, else the embedded local model."""
    return os.environ.get("DAGCALL_MODEL", "").strip() or DEFAULT_MODEL


def resolve_model(spec: Model | str | None = None) -> Model:
    """Turn a model or a model string into a model.

    Strings are ``"provider:model"``: ``"local"`` is the embedded local model and
    ``"local:/path/to/file.gguf"`` any GGUF file run by llama.cpp; ``"openai:gpt-4o-mini"``
    uses the OpenAI API (key from ``OPENAI_API_KEY``), and ``"openai:MODEL@http://host:port/v1"``
    any OpenAI-compatible server (vLLM, Ollama, llama.cpp's server); ``"anthropic:MODEL"``
    and ``"anthropic:MODEL@http://host:port"`` likewise.  Other prefixes are those added with
    :func:`register_model_provider`.  ``None`` means :func:`default_model_spec`.
    """
    if spec is None:
        spec = default_model_spec()
    if isinstance(spec, Model):
        return spec
    if not isinstance(spec, str):
        raise UsageError(f"model must be a dagcall Model or a string, not {type(spec).__name__}")
    provider, sep, rest = spec.partition(":")
    if not sep:
        provider = provider.strip()  # a bare prefix: "local"
    elif not rest:
        provider = ""  # "openai:" names no model
    factory = _providers.get(provider) or _plugin(provider)
    if factory is None and sep and provider:
        raise UsageError(
            f"unknown model provider {provider!r} in {spec!r}; known providers: "
            + ", ".join(model_providers())
        )
    if factory is None:
        raise UsageError(
            f"model string {spec!r} must look like 'provider:model', e.g. 'openai:gpt-4o-mini' "
            "or 'openai:MODEL@http://127.0.0.1:8000/v1'"
        )
    model = factory(rest)
    if not isinstance(model, Model):
        raise UsageError(
            f"model provider {provider!r} returned {type(model).__name__}, not a dagcall Model"
        )
    return model
