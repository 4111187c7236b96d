"""Latency models: a hosted LLM endpoint and a web API, for simulated benchmark runs.

A :class:`SimulatedModel` replies with reference text (a plan, a ReAct step, an answer) but
takes the time a hosted model would: its first token after ``base_latency + prompt tokens /
prefill rate``, then the rest at the decode rate, streamed line by line and in small chunks so
that dagcall's parser sees plan lines complete when they would.  Token counts are tiktoken's
``cl100k_base`` counts of the prompts the systems really build.  All waits are real
``asyncio.sleep`` calls multiplied by ``time_scale``, so the code under test runs for real.

With ``prefix_cache=True`` the endpoint caches prompt prefixes, for every system alike: a
prompt that begins like one of the last prompts it was sent (the same system prompt and
tools; ReAct's resent history; the joiner continuing the planner) has that prefix read back
in whole blocks, once it is long enough: it is not prefilled again, and it is billed at the
profile's cached price.  The GPT profiles cache as OpenAI does (from 1,024 tokens, in steps
of 128); ``llama-2-70b`` as vLLM's automatic prefix caching does (blocks of 16 tokens, no
minimum).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import math
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from dagcall import BaseTool, DelegatingTool, UsageError
from dagcall.tokens import encoding as cl100k

from ..models import Message, Model, StopFilter, TokenUsage

__all__ = ["PROFILES", "PrefixCache", "Profile", "SimulatedModel", "WebLatency", "with_latency"]

#: OpenAI's prompt cache: prefixes from 1,024 tokens on, in steps of 128 tokens.
CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128
#: Prompts are compared with earlier ones that begin with the same this many characters.
_BUCKET_CHARS = 48


@dataclass(frozen=True)
class Profile:
    """How fast and how expensive a hosted model endpoint is."""

    name: str
    base_latency: float  # seconds from request to first token for an empty prompt
    prefill_tokens_per_second: float
    decode_tokens_per_second: float
    input_price: float  # dollars per million tokens
    output_price: float
    source: str
    cached_input_ratio: float = 0.5  # a cached input token's price over an input token's
    cache_min_tokens: int = CACHE_MIN_TOKENS  # the shortest prefix the endpoint caches
    cache_step_tokens: int = CACHE_STEP_TOKENS  # ... and the blocks it caches in

    def time_to_first_token(self, input_tokens: int, cached_tokens: int = 0) -> float:
        return self.base_latency + (input_tokens - cached_tokens) / self.prefill_tokens_per_second

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        fresh = input_tokens - cached_tokens
        cached_price = self.input_price * self.cached_input_ratio
        return (
            fresh * self.input_price
            + cached_tokens * cached_price
            + output_tokens * self.output_price
        ) / 1e6


#: Endpoint profiles of the paper's era (late 2023).  Latencies are typical public figures, not
#: measurements of ours: streaming time-to-first-token and output speed as reported by the
#: LLMPerf leaderboard (Anyscale, Nov. 2023) and Artificial Analysis (2024) for these models,
#: rounded; prices are the providers' list prices at the time.
PROFILES: dict[str, Profile] = {
    "gpt-3.5": Profile(
        "gpt-3.5",
        base_latency=0.40,
        prefill_tokens_per_second=8000,
        decode_tokens_per_second=70,
        input_price=1.00,
        output_price=2.00,
        source="gpt-3.5-turbo-1106: ~0.4-0.6 s to first token, ~60-80 tokens/s; "
        "$1 / $2 per million input / output tokens (OpenAI, Nov. 2023)",
    ),
    "gpt-4": Profile(
        "gpt-4",
        base_latency=0.70,
        prefill_tokens_per_second=4000,
        decode_tokens_per_second=25,
        input_price=30.00,
        output_price=60.00,
        source="gpt-4-0613: ~0.7-1 s to first token, ~20-30 tokens/s; "
        "$30 / $60 per million tokens (OpenAI, 2023)",
    ),
    "llama-2-70b": Profile(
        "llama-2-70b",
        base_latency=0.25,
        prefill_tokens_per_second=3000,
        decode_tokens_per_second=30,
        input_price=1.00,
        output_price=1.00,
        source="LLaMA-2-70B-chat served by vLLM on 8 A100s (the paper's setup): ~0.2-0.4 s to "
        "first token, ~25-35 tokens/s per stream; $1 / $1 per million (Anyscale Endpoints, 2023)",
        cache_min_tokens=16,  # vLLM's automatic prefix caching: whole 16-token blocks
        cache_step_tokens=16,
    ),
}

Responder = Callable[[list[Message]], str | Awaitable[str]]


@lru_cache(maxsize=4096)
def count_tokens(text: str) -> int:
    """tiktoken's ``cl100k_base`` count (cached: system prompts repeat on every call)."""
    return len(cl100k().encode(text, disallowed_special=()))


def _chunks(text: str, max_tokens: int = 8) -> list[tuple[str, int]]:
    """``text`` cut at line ends and every ``max_tokens`` tokens: (piece, tokens in it)."""
    encoding = cl100k()
    out: list[tuple[str, int]] = []
    for line in text.splitlines(keepends=True):
        tokens = encoding.encode(line, disallowed_special=())
        for i in range(0, len(tokens), max_tokens):
            part = tokens[i : i + max_tokens]
            out.append((encoding.decode(part), len(part)))
    return out


def simulated_model(profile: str) -> SimulatedModel:
    """``resolve_model("simulated:PROFILE")`` (dagcall declares this provider as an entry
    point): a simulated model with that latency profile (``gpt-3.5`` when none is named).  It
    has no words of its own: ``dagcall bench`` gives it the reference answers of each
    question, and asked anything else it says so."""
    name = profile.strip() or "gpt-3.5"
    if name not in PROFILES:
        raise UsageError(f"unknown simulated profile {name!r}; known: {', '.join(PROFILES)}")
    return SimulatedModel(_no_words, PROFILES[name])


def _no_words(messages: Sequence[Message]) -> str:
    raise UsageError(
        "a simulated model only replays the benchmark's reference answers (dagcall bench "
        "--model simulated:PROFILE); to ask questions use a real model, or ScriptedModel"
    )


class PrefixCache:
    """The prompts an endpoint saw last, and how much of a new one they cover.

    Prompts are compared as text (each message's role and content, framed); the longest
    common prefix with any of the last ``size`` prompts that begin alike counts, in whole
    blocks of ``step_tokens`` tokens from ``min_tokens`` on.  Cheap enough not to hold up the
    event loop (which a simulated run would magnify by its time scale).
    """

    def __init__(
        self,
        size: int = 64,
        *,
        min_tokens: int = CACHE_MIN_TOKENS,
        step_tokens: int = CACHE_STEP_TOKENS,
    ) -> None:
        self.size = size
        self.min_tokens = min_tokens
        self.step_tokens = max(1, step_tokens)
        # by the prompts' first characters, each insertion-ordered: least recent first
        self._buckets: dict[str, dict[str, None]] = {}

    @staticmethod
    def text(messages: Sequence[Message]) -> str:
        return "".join(f"<|{m.role}|>{m.content}<|end|>" for m in messages)

    def lookup(self, messages: Sequence[Message]) -> int:
        """The cached tokens of ``messages``' prompt; the prompt is remembered for later."""
        prompt = self.text(messages)
        bucket = self._buckets.setdefault(prompt[:_BUCKET_CHARS], {})
        best = max((_common_prefix(seen, prompt) for seen in bucket), default=0)
        bucket.pop(prompt, None)
        bucket[prompt] = None
        while len(bucket) > self.size:
            del bucket[next(iter(bucket))]
        if best < _BUCKET_CHARS:
            return 0
        tokens = count_tokens(prompt[:best])
        if tokens < self.min_tokens:
            return 0
        return tokens - tokens % self.step_tokens


def _common_prefix(a: str, b: str) -> int:
    """The length of the longest common prefix of ``a`` and ``b`` (binary search on slices,
    so it runs at C speed)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


class SimulatedModel(Model):
    """A model whose words come from ``reply(messages)`` and whose timing from a profile;
    with ``prefix_cache`` an endpoint with a prompt cache (see the module's docstring)."""

    supports_grammar = False

    def __init__(
        self,
        reply: Responder,
        profile: Profile,
        *,
        time_scale: float = 1.0,
        name: str = "",
        prefix_cache: bool | PrefixCache = False,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.reply = reply
        self.profile = profile
        self.time_scale = time_scale
        self.name = name or f"simulated:{profile.name}"
        self.cache: PrefixCache | None = (
            prefix_cache
            if isinstance(prefix_cache, PrefixCache)
            else PrefixCache(
                min_tokens=profile.cache_min_tokens, step_tokens=profile.cache_step_tokens
            )
            if prefix_cache
            else None
        )

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] = (),
        max_tokens: int | None = None,
        grammar: str | None = None,
    ) -> AsyncGenerator[str | TokenUsage, None]:
        msgs = list(messages)
        start = time.perf_counter()
        text = self.reply(msgs)
        if inspect.isawaitable(text):
            text = await text
        if not isinstance(text, str):
            raise TypeError(f"a simulated model's reply must be text, not {type(text).__name__}")
        input_tokens = sum(count_tokens(m.content) + 4 for m in msgs)  # + chat framing
        cached = 0 if self.cache is None else min(self.cache.lookup(msgs), input_tokens - 1)
        due = self.profile.time_to_first_token(input_tokens, cached)
        rate = self.profile.decode_tokens_per_second
        stopper = StopFilter(stop)
        sent = 0
        emitted = 0
        for piece, n in _chunks(text):
            if max_tokens is not None and sent + n > max_tokens:
                break
            # the chunk's first token arrives at `due`, its last n-1 tokens later
            wait = start + (due + (sent + n - 1) / rate) * self.time_scale - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            sent += n
            out = stopper.feed(piece)
            if out:
                emitted += 1
                yield out
            if stopper.stopped:
                break
        tail = stopper.flush()
        if tail:
            yield tail
        yield TokenUsage(
            input_tokens=input_tokens,
            output_tokens=sent,
            estimated=False,
            cached_input_tokens=max(0, cached),
        )


@dataclass(frozen=True)
class WebLatency:
    """A web API's latency: log-normal around ``median`` seconds, seeded per call, so the same
    call takes the same time in every system that makes it."""

    median: float = 0.6
    sigma: float = 0.35
    seed: int = 0

    def of(self, *key: Any) -> float:
        digest = hashlib.sha256(repr((self.seed, *key)).encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))  # noqa: S311 - not a secret
        return self.median * math.exp(rng.gauss(0.0, self.sigma))


class _Delayed(DelegatingTool):
    """A tool behind a simulated network: each call first waits its seeded latency."""

    def __init__(self, inner: BaseTool, latency: WebLatency, key: str, time_scale: float) -> None:
        super().__init__(inner)
        self.latency = latency
        self.key = key
        self.time_scale = time_scale

    async def invoke(self, arguments: Mapping[str, Any]) -> Any:
        wait = self.latency.of(self.key, self.name, sorted(arguments.items()))
        await asyncio.sleep(wait * self.time_scale)
        return await self.inner.invoke(arguments)


def with_latency(
    tool: BaseTool, latency: WebLatency, *, key: str, time_scale: float = 1.0
) -> BaseTool:
    """``tool`` behind a simulated network: each call first waits ``latency.of(key, args)``
    (scaled), then runs the tool; its definition, prompt text and validation are the tool's."""
    return _Delayed(tool, latency, key, time_scale)
