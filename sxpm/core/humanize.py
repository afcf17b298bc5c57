"""Sizes and words for people: one formatter for every command that prints one."""

from __future__ import annotations


def human_size(n: int) -> str:
    """``1536`` -> ``1.5 KiB``; binary units, as file managers and oras print them."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def with_article(word: str) -> str:
    """``expert`` -> ``an expert``, ``model`` -> ``a model``: kinds in messages."""
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"
