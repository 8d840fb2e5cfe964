"""A one-line terminal progress bar (stdlib only).

Redrawn in place with a carriage return, at most every ``min_interval`` seconds::

    [#########---------------]   37,000/100,000   37%   3,120 rows/s   ETA 0:20
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


def format_duration(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``--:--`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    total = round(max(seconds, 0.0))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render_bar(
    done: int, total: int | None, elapsed: float, *, width: int = 24, unit: str = "rows"
) -> str:
    """The bar's text for ``done`` of ``total`` items after ``elapsed`` seconds."""
    rate = done / elapsed if elapsed > 0 else 0.0
    speed = f"{rate:,.0f} {unit}/s"
    if total is None:
        return f"{done:,} {unit}   {speed}   {format_duration(elapsed)} elapsed"
    fraction = min(done / total, 1.0) if total > 0 else 1.0
    filled = round(fraction * width)
    left = max(total - done, 0)
    eta = left / rate if rate > 0 else (0.0 if left == 0 else None)
    return (
        f"[{'#' * filled}{'-' * (width - filled)}]   {done:,}/{total:,}   "
        f"{fraction:4.0%}   {speed}   ETA {format_duration(eta)}"
    )


class ProgressBar:
    """Draws :func:`render_bar` on ``stream``, overwriting the previous line."""

    def __init__(
        self,
        stream: TextIO,
        *,
        width: int = 24,
        min_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.width = width
        self.min_interval = min_interval
        self.clock = clock
        self._drawn_at: float | None = None
        self._length = 0

    def update(self, done: int, total: int | None, elapsed: float, *, final: bool = False) -> None:
        """Redraw, unless the last redraw was under ``min_interval`` ago (and not ``final``)."""
        now = self.clock()
        if not final and self._drawn_at is not None and now - self._drawn_at < self.min_interval:
            return
        line = render_bar(done, total, elapsed, width=self.width)
        self.stream.write("\r" + line + " " * max(self._length - len(line), 0))
        self.stream.flush()
        self._drawn_at = now
        self._length = len(line)

    def close(self) -> None:
        """Move past the bar's line, if one was drawn."""
        if self._drawn_at is not None:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn_at = None
            self._length = 0
