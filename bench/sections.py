"""Marked sections of benchmarks.md that one script writes and the others keep.

``bench/compare.py`` rewrites the report but keeps the sections that
``bench/http_throughput.py`` and ``bench/purge_at_scale.py`` wrote, each between
``<!-- name:start -->`` and ``<!-- name:end -->``.
"""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of section ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(path: Path, name: str, body: str) -> None:
    """Put ``body`` between the markers of ``name`` in ``path`` (appended if absent)."""
    start_marker, end_marker = markers(name)
    section = f"{start_marker}\n{body.strip()}\n{end_marker}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = text.find(start_marker), text.find(end_marker)
    if start >= 0 and end >= 0:
        text = text[:start] + section + text[end + len(end_marker) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
