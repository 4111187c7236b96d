"""resolve_model's registry of model string prefixes: register_model_provider."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dagcall import UsageError
from dagcall.models import (
    ENTRY_POINT_GROUP,
    AnthropicModel,
    Message,
    Model,
    OpenAIModel,
    ScriptedModel,
    complete,
    model_providers,
    register_model_provider,
    resolve_model,
)
from dagcall.models import _providers as registry  # the table itself, to restore it


@pytest.fixture(autouse=True)
def _restore_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    saved = dict(registry)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    yield
    registry.clear()
    registry.update(saved)


def test_the_package_registers_local_openai_and_anthropic() -> None:
    # and declares "simulated" (dagcall.bench) as an entry point, loaded on first use
    assert model_providers() == ("anthropic", "local", "openai", "simulated")


async def test_a_registered_prefix_gets_the_rest_of_the_string() -> None:
    seen: list[str] = []

    def replayed(rest: str) -> Model:
        seen.append(rest)
        return ScriptedModel([f"profile {rest}"])

    register_model_provider("replayed", replayed)
    model = resolve_model("replayed:fast@p50=2s:x")
    assert seen == ["fast@p50=2s:x"]  # everything after the first ':' as it was written
    assert (await complete(model, [Message("user", "hi")])).text == "profile fast@p50=2s:x"
    assert "replayed" in model_providers()


def test_a_bare_prefix_gets_an_empty_rest() -> None:
    seen: list[str] = []

    def factory(rest: str) -> ScriptedModel:
        seen.append(rest)
        return ScriptedModel(["x"])

    register_model_provider("sim", factory)
    resolve_model("sim")
    assert seen == [""]


def test_re_registering_raises_unless_replace() -> None:
    register_model_provider("sim", lambda rest: ScriptedModel(["one"]))
    with pytest.raises(UsageError, match="'sim' is already registered; pass replace=True"):
        register_model_provider("sim", lambda rest: ScriptedModel(["two"]))
    with pytest.raises(UsageError, match="'openai' is already registered"):
        register_model_provider("openai", lambda rest: ScriptedModel(["two"]))
    register_model_provider("sim", lambda rest: ScriptedModel(["two"]), replace=True)
    assert isinstance(resolve_model("sim:x"), ScriptedModel)


@pytest.mark.parametrize("prefix", ["", "a:b", "has space", "9lives", None])
def test_bad_prefixes_are_refused(prefix: object) -> None:
    with pytest.raises(UsageError, match="a model provider prefix is a name like"):
        register_model_provider(prefix, lambda rest: ScriptedModel(["x"]))  # type: ignore[arg-type]


def test_a_factory_must_be_callable() -> None:
    with pytest.raises(UsageError, match="must be callable"):
        register_model_provider("sim", "not a function")  # type: ignore[arg-type]


def test_a_factory_that_returns_no_model_is_a_usage_error() -> None:
    register_model_provider("sim", lambda rest: "a string")  # type: ignore[arg-type,return-value]
    with pytest.raises(UsageError, match="model provider 'sim' returned str, not a dagcall Model"):
        resolve_model("sim:x")


def test_unknown_prefix_lists_the_registered_ones() -> None:
    register_model_provider("replayed", lambda rest: ScriptedModel(["x"]))
    with pytest.raises(UsageError) as info:
        resolve_model("bogus:x")
    assert str(info.value) == (
        "unknown model provider 'bogus' in 'bogus:x'; known providers: "
        "anthropic, local, openai, replayed, simulated"
    )


@pytest.mark.parametrize("spec", ["bogus", "openai:", "local:", "openai", "anthropic:@http://h:1"])
def test_strings_that_name_no_model(spec: str) -> None:
    with pytest.raises(UsageError, match="must look like 'provider:model'"):
        resolve_model(spec)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_at_with_no_url_is_refused_by_both_providers(provider: str) -> None:
    with pytest.raises(UsageError, match=f"'{provider}:x@' has '@' but no server address"):
        resolve_model(f"{provider}:x@")


def test_provider_strings_build_their_models() -> None:
    openai_model = resolve_model("openai:m@http://127.0.0.1:9/v1")
    assert isinstance(openai_model, OpenAIModel)
    assert openai_model.name == "openai:m@http://127.0.0.1:9/v1"
    anthropic_model = resolve_model("anthropic:m@http://127.0.0.1:9")
    assert isinstance(anthropic_model, AnthropicModel)
    assert anthropic_model.name == "anthropic:m@http://127.0.0.1:9"


def test_a_model_is_returned_as_is() -> None:
    model = ScriptedModel(["x"])
    assert resolve_model(model) is model


# -- providers that installed packages declare (entry points) ----------------------------------


def test_simulated_is_a_declared_provider_not_a_special_case() -> None:
    from dagcall.bench import PROFILES, SimulatedModel

    registry.pop("simulated", None)  # as in a fresh process: found through its entry point
    assert "simulated" in model_providers()
    model = resolve_model("simulated:gpt-4")
    assert isinstance(model, SimulatedModel)
    assert model.profile is PROFILES["gpt-4"]
    assert resolve_model("simulated").profile is PROFILES["gpt-3.5"]  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="unknown simulated profile 'gpt-9'"):
        resolve_model("simulated:gpt-9")


async def test_a_simulated_model_has_no_words_of_its_own() -> None:
    from dagcall import Compiler, DagcallError

    with pytest.raises(DagcallError, match="only replays the benchmark's reference answers"):
        await Compiler(model="simulated:gpt-3.5", max_replans=0).arun("What is 2 + 2?")


def test_a_broken_entry_point_is_a_clear_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    point = metadata.EntryPoint("brokenprov", "no_such_module_xyz:factory", ENTRY_POINT_GROUP)

    def fake(**select: str) -> list[metadata.EntryPoint]:
        wanted = select.get("name")
        return [point] if wanted in (None, "brokenprov") else []

    monkeypatch.setattr(metadata, "entry_points", fake)
    with pytest.raises(UsageError, match=r"'brokenprov'.*could not be loaded: ModuleNotFound"):
        resolve_model("brokenprov:x")
