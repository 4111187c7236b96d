"""Model back ends behind one provider-neutral :class:`Model` interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import UsageError
from ._base import Completion, Message, Model, StopFilter, TokenUsage, complete
from ._scripted import ScriptedCall, ScriptedModel

if TYPE_CHECKING:
    from ._openai import OpenAIModel

__all__ = [
    "Completion",
    "Message",
    "Model",
    "OpenAIModel",
    "ScriptedCall",
    "ScriptedModel",
    "StopFilter",
    "TokenUsage",
    "complete",
    "resolve_model",
]

KNOWN_PROVIDERS = ("openai",)


def __getattr__(name: str) -> object:
    # The OpenAI SDK is imported only when an OpenAI model is used.
    if name == "OpenAIModel":
        from ._openai import OpenAIModel

        return OpenAIModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_model(spec: Model | str) -> Model:
    """Turn a model or a model string into a model.

    Strings are ``"provider:model"``: ``"openai:gpt-4o-mini"`` uses the OpenAI API (key from
    ``OPENAI_API_KEY``), and ``"openai:MODEL@http://host:port/v1"`` any OpenAI-compatible
    server (vLLM, Ollama, llama.cpp's server).
    """
    if isinstance(spec, Model):
        return spec
    if not isinstance(spec, str):
        raise UsageError(f"model must be a dagcall Model or a string, not {type(spec).__name__}")
    provider, sep, rest = spec.partition(":")
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
    raise UsageError(
        f"unknown model provider {provider!r} in {spec!r}; known providers: "
        + ", ".join(KNOWN_PROVIDERS)
    )
