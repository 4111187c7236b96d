"""docs_tool / DocsIndex: BM25 passages with their sources, reindexing, bad folders."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dagcall import Compiler, ScriptedModel, ToolError, UsageError
from dagcall.tools import DocsIndex, docs_tool
from dagcall.tools import _docs as docs_module


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    (tmp_path / "oceans.md").write_text(
        "# Oceans\n\nThe Mariana Trench is the deepest point of the Pacific Ocean, "
        "10,994 metres below sea level.\n\n"
        + "Filler about waves and tides. " * 40
        + "\n\nThe Puerto Rico Trench is the deepest point of the Atlantic Ocean, 8,376 metres.\n"
    )
    (tmp_path / "land").mkdir()
    (tmp_path / "land" / "deserts.txt").write_text(
        "The Sahara is the largest hot desert and covers 9.2 million square kilometres.\n\n"
        "The Gobi desert lies in China and Mongolia.\n"
    )
    (tmp_path / "land" / "notes.markdown").write_text("Mount Everest is 8,849 metres high.\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG not text")
    (tmp_path / ".hidden.md").write_text("The Sahara secret that must not be indexed.")
    return tmp_path


def _touch_later(path: Path) -> None:
    later = time.time() + 10
    os.utime(path, (later, later))


async def test_the_right_passage_ranks_first_with_its_source(docs: Path) -> None:
    search = docs_tool(docs, k=2)
    text = await search.invoke({"query": "How large is the Sahara desert?"})
    first, *rest = text.split("\n\n")
    assert first.startswith("[land/deserts.txt] (score ")
    assert "9.2 million square kilometres" in first
    assert len(rest) <= 1
    assert "secret" not in text


async def test_each_hit_shows_source_and_score(docs: Path) -> None:
    search = docs_tool(docs, k=3)
    text = await search.invoke({"query": "deepest trench metres"})
    hits = text.split("\n\n")
    assert 1 <= len(hits) <= 3
    for hit in hits:
        source, rest = hit.split("] (score ", 1)
        assert source.lstrip("[") in {"oceans.md", "land/deserts.txt", "land/notes.markdown"}
        assert float(rest.split(")", 1)[0]) > 0
    assert hits[0].startswith("[oceans.md]")
    assert "Mariana Trench" in hits[0] or "Puerto Rico Trench" in hits[0]


def test_passages_are_paragraphs_merged_up_to_800_characters(docs: Path) -> None:
    index = DocsIndex(docs)
    index.refresh()
    passages = index.passages
    assert {p.source for p in passages} == {"oceans.md", "land/deserts.txt", "land/notes.markdown"}
    assert all(len(p.text) <= 800 for p in passages)
    # The two short desert paragraphs are merged into one passage.
    [deserts] = [p for p in passages if p.source == "land/deserts.txt"]
    assert "Sahara" in deserts.text
    assert "Gobi" in deserts.text
    # The long filler paragraph is cut, and the trenches stay findable on their own.
    assert len([p for p in passages if p.source == "oceans.md"]) >= 3


def test_split_passages_cuts_long_paragraphs_between_words() -> None:
    text = "word " * 500 + "\n\nShort one.\n\n\n\nAnother short one."
    passages = docs_module.split_passages("a.txt", text, limit=100)
    assert all(len(p.text) <= 100 for p in passages)
    assert all(not p.text.startswith(" ") and "ord word" in p.text for p in passages[:-1])
    assert passages[-1].text.endswith("Short one. Another short one.")


async def test_the_index_follows_added_changed_and_removed_files(docs: Path) -> None:
    index = DocsIndex(docs)
    assert index.search("Atacama") == []
    atacama = docs / "atacama.txt"
    atacama.write_text("The Atacama desert is the driest desert in the world.")
    _touch_later(atacama)
    (passage, score), *_ = index.search("Atacama")
    assert passage.source == "atacama.txt"
    assert score > 0

    atacama.write_text("The Namib desert is older than the Sahara.")
    _touch_later(atacama)
    assert index.search("Atacama") == []
    assert index.search("Namib")[0][0].source == "atacama.txt"

    atacama.unlink()
    assert index.search("Namib") == []


async def test_the_index_is_built_once_while_nothing_changes(
    docs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = DocsIndex(docs)
    builds: list[int] = []
    real = docs_module.split_passages

    def counting(source: str, text: str, limit: int = 800) -> list[docs_module.Passage]:
        builds.append(1)
        return real(source, text, limit)

    monkeypatch.setattr(docs_module, "split_passages", counting)
    index.search("Sahara")
    index.search("Gobi")
    index.search("Everest")
    assert len(builds) == 3  # three files, read once


async def test_no_match_and_empty_query_are_tool_errors(docs: Path) -> None:
    search = docs_tool(docs)
    with pytest.raises(ToolError, match=r"no passage in .* matches 'zyzzyva'"):
        await search.invoke({"query": "zyzzyva"})
    with pytest.raises(ToolError, match="non-empty query"):
        await search.invoke({"query": "   "})
    with pytest.raises(ToolError, match="no passage"):  # only stop words
        await search.invoke({"query": "the of and"})


async def test_a_folder_emptied_after_start_is_a_tool_error(tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("Kilimanjaro is 5,895 metres high.")
    search = docs_tool(tmp_path)
    note.unlink()
    with pytest.raises(ToolError, match="is empty"):
        await search.invoke({"query": "Kilimanjaro"})


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"docs folder .*missing does not exist"):
        docs_tool(tmp_path / "missing")


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("text")
    with pytest.raises(UsageError, match="is not a folder"):
        DocsIndex(tmp_path / "a.txt")


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(
        UsageError, match=r"is empty, so there is no text to search: put \.txt, \.md, \.markdown"
    ):
        docs_tool(tmp_path)


def test_folder_without_readable_text(tmp_path: Path) -> None:
    (tmp_path / "only.png").write_bytes(b"x")
    (tmp_path / "blank.txt").write_text("  \n\n ")
    with pytest.raises(
        UsageError, match=r"no text to search: dagcall reads \.txt, \.md, \.markdown, .*\.pdf"
    ):
        docs_tool(tmp_path)


def test_bad_k(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="k must be at least 1"):
        docs_tool(tmp_path, k=0)


def _pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


async def test_pdfs_are_read_with_pypdf(tmp_path: Path) -> None:
    pytest.importorskip("pypdf")
    (tmp_path / "report.pdf").write_bytes(_pdf("The Atacama desert is the driest place."))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    index = DocsIndex(tmp_path)
    (passage, _), *_ = index.search("driest desert")
    assert passage.source == "report.pdf"
    assert "Atacama" in passage.text
    assert "broken.pdf" in index.skipped
    assert index.skipped["broken.pdf"].startswith("PDF could not be read")


def test_pdfs_are_skipped_with_a_note_without_pypdf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docs_module, "_pypdf", lambda: None)
    (tmp_path / "report.pdf").write_bytes(_pdf("The Atacama desert is the driest place."))
    with pytest.raises(UsageError, match=r"report\.pdf: PDF skipped: install pypdf"):
        docs_tool(tmp_path)
    (tmp_path / "notes.txt").write_text("The Atacama desert is in Chile.")
    index = DocsIndex(tmp_path)
    assert index.search("Atacama")[0][0].source == "notes.txt"
    assert index.skipped == {"report.pdf": "PDF skipped: install pypdf to read PDF files"}


def test_search_docs_in_a_run(docs: Path) -> None:
    planner = ScriptedModel(
        ['1. search_docs("Everest height")\n2. join()', "Action: Finish(8,849 m)"]
    )
    result = Compiler(model=planner, tools=[docs_tool(docs, k=1)]).run("How high is Everest?")
    assert result.answer == "8,849 m"
    assert result.task(1).output.startswith("[land/notes.markdown] (score ")
