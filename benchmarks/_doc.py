"""Writing a benchmark's results into docs/benchmarks.md, between its markers."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def replace_block(start: str, end: str, block: str) -> Path:
    """Put ``block`` (which begins with ``start`` and ends with ``end``) in place of the
    old one, or append it; the other benchmarks' sections are left as they are."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = block.strip("\n")
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)
    return DOC
