"""search_docs: BM25 search (``bm25s``) over a folder of text, Markdown or extracted-PDF files."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import ToolError, UsageError
from .._tools import Tool

__all__ = ["DocsIndex", "Passage", "docs_tool"]

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
_PASSAGE_CHARS = 800


@dataclass(frozen=True)
class Passage:
    """A piece of a document: a paragraph, or several short ones merged."""

    source: str  # path relative to the indexed folder
    text: str


def _passages(source: str, text: str) -> list[Passage]:
    out: list[Passage] = []
    current = ""
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if not para:
            continue
        if current and len(current) + len(para) + 1 > _PASSAGE_CHARS:
            out.append(Passage(source, current))
            current = ""
        current = f"{current} {para}".strip()
        while len(current) > 2 * _PASSAGE_CHARS:  # one huge paragraph: cut it
            out.append(Passage(source, current[:_PASSAGE_CHARS]))
            current = current[_PASSAGE_CHARS:]
    if current:
        out.append(Passage(source, current))
    return out


class DocsIndex:
    """A BM25 index of a folder's text files, built on first search and rebuilt when the
    files change (by modification time and size)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UsageError(f"--docs folder {self.folder} does not exist or is not a folder")
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._passages: list[Passage] = []
        self._bm25: Any = None

    def _files(self) -> list[Path]:
        return sorted(
            p for p in self.folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
        )

    def _refresh(self) -> None:
        files = self._files()
        stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        if stamp == self._stamp:
            return
        passages: list[Passage] = []
        for path in files:
            text = path.read_text(encoding="utf-8", errors="replace")
            passages += _passages(str(path.relative_to(self.folder)), text)
        if not passages:
            raise UsageError(
                f"{self.folder} has no text to search: dagcall reads "
                f"{', '.join(TEXT_SUFFIXES)} files (extract PDFs to text first)"
            )
        import bm25s

        tokens = bm25s.tokenize([p.text for p in passages], show_progress=False)
        bm25 = bm25s.BM25()
        bm25.index(tokens, show_progress=False)
        self._passages, self._bm25, self._stamp = passages, bm25, stamp

    def search(self, query: str, k: int = 3) -> list[tuple[Passage, float]]:
        """The ``k`` best passages for ``query`` with their BM25 scores, best first."""
        import bm25s

        with self._lock:
            self._refresh()
            query_tokens = bm25s.tokenize([query], show_progress=False)
            if not query_tokens.ids or not query_tokens.ids[0]:
                return []
            k = min(k, len(self._passages))
            ids, scores = self._bm25.retrieve(query_tokens, k=k, show_progress=False)
            return [
                (self._passages[int(i)], float(s))
                for i, s in zip(ids[0], scores[0], strict=True)
                if float(s) > 0
            ]


def docs_tool(folder: str | Path, *, k: int = 3, name: str = "search_docs") -> Tool:
    """A tool ``search_docs(query)`` returning the best passages of ``folder`` with sources."""
    index = DocsIndex(folder)
    index._refresh()  # report a bad folder now, not at the first question

    def search_docs(query: str) -> str:
        if not query.strip():
            raise ToolError("search_docs needs a non-empty query", tool=name)
        hits = index.search(query, k)
        if not hits:
            raise ToolError(f"no passage in {index.folder} matches {query!r}", tool=name)
        return "\n\n".join(f"[{p.source}] (score {s:.2f}) {p.text}" for p, s in hits)

    return Tool(
        search_docs,
        name=name,
        description=(
            f"Search the documents in {index.folder.name} for the query; returns the best "
            "passages, each with its source file."
        ),
    )
