"""search_docs: BM25 search (``bm25s``) over a folder of text, Markdown or PDF files."""

from __future__ import annotations

import importlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import ToolError, UsageError
from .._tools import Tool

__all__ = ["DocsIndex", "Passage", "docs_tool"]

#: Files read as text (PDFs extracted to text are ``.txt`` files like any other).
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
PDF_SUFFIX = ".pdf"
SUFFIXES = (*TEXT_SUFFIXES, PDF_SUFFIX)
PASSAGE_CHARS = 800
_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

Stamp = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class Passage:
    """A piece of a document: a paragraph, several short ones merged, or a part of a long one."""

    source: str  # path relative to the indexed folder, with / separators
    text: str


def _pypdf() -> Any | None:
    """The optional ``pypdf`` module, or ``None`` when it is not installed."""
    try:
        return importlib.import_module("pypdf")
    except ImportError:
        return None


def _pieces(paragraph: str, limit: int) -> list[str]:
    """Cut a paragraph longer than ``limit`` at sentence ends, or else between words."""
    if len(paragraph) <= limit:
        return [paragraph]
    out: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        for word in sentence.split(" ") if len(sentence) > limit else [sentence]:
            if current and len(current) + 1 + len(word) > limit:
                out.append(current)
                current = ""
            current = f"{current} {word}" if current else word
    if current:
        out.append(current)
    return out


def split_passages(source: str, text: str, limit: int = PASSAGE_CHARS) -> list[Passage]:
    """Split ``text`` into paragraphs (blank-line separated), merging short neighbours up to
    ``limit`` characters and cutting longer ones."""
    out: list[Passage] = []
    current = ""
    for raw in _PARAGRAPH.split(text):
        paragraph = " ".join(raw.split())
        for piece in _pieces(paragraph, limit) if paragraph else []:
            if current and len(current) + 1 + len(piece) > limit:
                out.append(Passage(source, current))
                current = ""
            current = f"{current} {piece}" if current else piece
    if current:
        out.append(Passage(source, current))
    return out


def _bm25s() -> Any:
    """The ``bm25s`` module (the ``docs`` extra), or a :class:`UsageError` naming the extra."""
    try:
        return importlib.import_module("bm25s")
    except ImportError:
        raise UsageError(
            "document search needs the 'docs' extra: pip install 'dagcall[docs]'"
        ) from None


class DocsIndex:
    """A BM25 index over the text files of ``folder`` (and its subfolders).

    It reads ``.txt``, ``.md``, ``.markdown`` and ``.rst`` files, and ``.pdf`` files when
    ``pypdf`` is installed; hidden files and folders are left out.  The index is built on the
    first search and rebuilt whenever a file is added, removed or changed (by modification time
    and size).  Files that could not be read are listed in :attr:`skipped` with the reason.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.exists():
            raise UsageError(f"docs folder {self.folder} does not exist")
        if not self.folder.is_dir():
            raise UsageError(f"docs folder {self.folder} is not a folder")
        _bm25s()  # fail here, not at the first search, when the extra is missing
        #: Files not indexed, by relative path, with the reason (e.g. a PDF without pypdf).
        self.skipped: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stamp: Stamp | None = None
        self._passages: list[Passage] = []
        self._bm25: Any = None

    @property
    def passages(self) -> list[Passage]:
        """The indexed passages (empty until the index is built)."""
        return list(self._passages)

    def _files(self) -> list[Path]:
        files = []
        for path in self.folder.rglob("*"):
            relative = path.relative_to(self.folder)
            if any(part.startswith(".") for part in relative.parts):
                continue
            if path.suffix.lower() in SUFFIXES and path.is_file():
                files.append(path)
        return sorted(files)

    def _read(self, path: Path, relative: str) -> str:
        if path.suffix.lower() != PDF_SUFFIX:
            return path.read_text(encoding="utf-8", errors="replace")
        pypdf = _pypdf()
        if pypdf is None:
            self.skipped[relative] = "PDF skipped: install pypdf to read PDF files"
            return ""
        try:
            reader = pypdf.PdfReader(str(path))
            return "\n\n".join(page.extract_text() or "" for page in reader.pages)
        except Exception as exc:  # pypdf raises many kinds for a damaged file
            self.skipped[relative] = f"PDF could not be read ({type(exc).__name__}: {exc})"
            return ""

    def refresh(self) -> None:
        """Build the index, or rebuild it if the folder's files changed since the last build.

        Raises :class:`UsageError` if the folder is gone, empty, or has no readable text.
        """
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        if not self.folder.is_dir():
            raise UsageError(f"docs folder {self.folder} does not exist any more")
        files: list[tuple[Path, str, int, int]] = []
        for path in self._files():
            try:
                stat = path.stat()
            except OSError:  # removed while we looked
                continue
            relative = path.relative_to(self.folder).as_posix()
            files.append((path, relative, stat.st_mtime_ns, stat.st_size))
        stamp = tuple((relative, mtime, size) for _, relative, mtime, size in files)
        if stamp == self._stamp:
            return
        self.skipped = {}
        passages: list[Passage] = []
        for path, relative, _, _ in files:
            try:
                text = self._read(path, relative)
            except OSError as exc:
                self.skipped[relative] = f"could not be read ({exc.strerror or exc})"
                continue
            passages += split_passages(relative, text)
        if not passages:
            raise UsageError(self._nothing_to_read(bool(files)))
        bm25s = _bm25s()

        tokens = bm25s.tokenize([p.text for p in passages], show_progress=False)
        bm25 = bm25s.BM25()
        bm25.index(tokens, show_progress=False)
        self._passages, self._bm25, self._stamp = passages, bm25, stamp

    def _nothing_to_read(self, had_files: bool) -> str:
        reads = ", ".join(TEXT_SUFFIXES) + f" and {PDF_SUFFIX} (with pypdf installed)"
        if not had_files and not any(self.folder.iterdir()):
            return (
                f"docs folder {self.folder} is empty, so there is no text to search: "
                f"put {reads} files in it"
            )
        why = "".join(f"; {name}: {reason}" for name, reason in sorted(self.skipped.items()))
        return (
            f"{self.folder} has no text to search: dagcall reads {reads} files, "
            f"and found none with text in them{why}"
        )

    def search(self, query: str, k: int = 3) -> list[tuple[Passage, float]]:
        """The ``k`` best passages for ``query`` with their BM25 scores, best first; passages
        that share no word with the query are left out."""
        bm25s = _bm25s()

        with self._lock:
            self._refresh()
            words = bm25s.tokenize([query], return_ids=False, show_progress=False)
            if not words or not words[0]:
                return []
            k = min(k, len(self._passages))
            ids, scores = self._bm25.retrieve(words, k=k, show_progress=False)
            return [
                (self._passages[int(i)], float(s))
                for i, s in zip(ids[0], scores[0], strict=True)
                if float(s) > 0
            ]


def docs_tool(folder: str | Path, *, k: int = 3, name: str = "search_docs") -> Tool:
    """A tool ``search_docs(query) -> str`` returning the ``k`` best passages of ``folder``,
    each with its source file and score.

    The folder is indexed now, so a missing, empty or unreadable folder raises
    :class:`UsageError` here rather than at the first question; later changes to its files
    are picked up at the next search.
    """
    if k < 1:
        raise UsageError(f"docs_tool: k must be at least 1, not {k}")
    index = DocsIndex(folder)
    index.refresh()

    def search_docs(query: str) -> str:
        if not query.strip():
            raise ToolError(f"{name} needs a non-empty query", tool=name)
        try:
            hits = index.search(query, k)
        except UsageError as exc:  # the folder changed under us: tell the joiner
            raise ToolError(exc.message, tool=name) from None
        if not hits:
            raise ToolError(f"no passage in {index.folder.name} matches {query!r}", tool=name)
        return "\n\n".join(f"[{p.source}] (score {s:.2f}) {p.text}" for p, s in hits)

    return Tool(
        search_docs,
        name=name,
        description=(
            f"Search the documents in the folder {index.folder.name!r} for the query (keywords "
            "work best); returns the best passages, each with its source file and score."
        ),
    )
