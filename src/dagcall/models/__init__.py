"""Model back ends behind one provider-neutral :class:`Model` interface."""

from __future__ import annotations

import os
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
    "resolve_model",
]

KNOWN_PROVIDERS = ("anthropic", "local", "openai")
DEFAULT_MODEL = "local"


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
    any OpenAI-compatible server (vLLM, Ollama, llama.cpp's server).  ``None`` means
    :func:`default_model_spec`.
    """
    if spec is None:
        spec = default_model_spec()
    if isinstance(spec, Model):
        return spec
    if not isinstance(spec, str):
        raise UsageError(f"model must be a dagcall Model or a string, not {type(spec).__name__}")
    if spec.strip() == "local":
        from ._local import LocalModel

        return LocalModel()
    provider, sep, rest = spec.partition(":")
    if provider == "local" and rest:
        from ._local import LocalModel

        return LocalModel(rest)
    if not sep or not rest:
        raise UsageError(
            f"model string {spec!r} must look like 'provider:model', e.g. 'openai:gpt-4o-mini' "
            "or 'openai:MODEL@http://127.0.0.1:8000/v1'"
        )
    if provider == "openai":
        from ._openai import OpenAIModel

        name, at, base_url = rest.partition("@")
        if at and not base_url:
            raise UsageError(f"model string {spec!r} has '@' but no server address after it")
        return OpenAIModel(name, base_url=base_url or None)
    if provider == "anthropic":
        from ._anthropic import AnthropicModel

        name, at, base_url = rest.partition("@")
        return AnthropicModel(name, base_url=base_url or None)
    raise UsageError(
        f"unknown model provider {provider!r} in {spec!r}; known providers: "
        + ", ".join(KNOWN_PROVIDERS)
    )
