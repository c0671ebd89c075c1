"""A progress line for long commands: count, bytes, rate and ETA, on a terminal only."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

REDRAW_INTERVAL = 0.2  # seconds between redraws


class Progress:
    """Count work done (thread-safe) and redraw one status line on *stream*.

    Drawing is on only when *stream* is a terminal (unless *enabled* says
    otherwise), so logs and pipes never receive it.  With a *total*, the line
    shows the percentage and an estimate of the time left.
    """

    def __init__(self, label: str, total: int | None = None, *, unit: str = "objects",
                 stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_terminal(self.stream) if enabled is None else enabled
        self.done = 0
        self.bytes = 0
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self._lock = threading.Lock()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def advance(self, count: int = 1, nbytes: int = 0) -> None:
        with self._lock:
            self.done += count
            self.bytes += nbytes
            now = time.monotonic()
            if self.enabled and now - self._drawn_at >= REDRAW_INTERVAL:
                self._drawn_at = now
                self._draw(now)

    def close(self) -> None:
        """Draw the final state and end the line."""
        with self._lock:
            if self.enabled:
                self._draw(time.monotonic())
                self.stream.write("\n")
                self.stream.flush()
                self.enabled = False

    def line(self, now: float) -> str:
        """The status line at monotonic time *now*."""
        elapsed = max(now - self.started, 1e-6)
        parts = [f"{self.label}: {self.done}"]
        if self.total is not None:
            parts[0] += f"/{self.total} {self.unit}"
            if self.total:
                parts.append(f"{100 * self.done / self.total:.0f}%")
        else:
            parts[0] += f" {self.unit}"
        if self.bytes:
            parts.append(f"{_size(self.bytes)}, {_size(self.bytes / elapsed)}/s")
        parts.append(f"{self.done / elapsed:.1f} {self.unit}/s")
        if self.total and self.done:
            left = (self.total - self.done) * elapsed / self.done
            parts.append(f"ETA {_duration(left)}")
        parts.append(f"elapsed {_duration(elapsed)}")
        return ", ".join(parts)

    def _draw(self, now: float) -> None:
        self.stream.write("\r\x1b[K" + self.line(now))
        self.stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024:
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{nbytes:.0f} B"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
