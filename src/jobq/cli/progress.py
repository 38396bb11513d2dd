"""A progress bar for long CLI work (bulk enqueue, bulk retry), drawn on stderr.

It draws only on a terminal (``\\r``-redrawn, about ten times a second), so pipes and logs
stay clean; the command prints its summary line to stdout either way.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30


class ProgressBar:
    """``label [#######.......] 350/1000  35%  120/s``; ``total=None`` shows a count only."""

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self._t0 = time.monotonic()
        self._last = 0.0
        self._width = 0

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items done; redraw if it is time."""
        self.done += n
        self._draw(force=False)

    def _draw(self, force: bool) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        rate = self.done / max(now - self._t0, 1e-9)
        if self.total:
            frac = min(1.0, self.done / self.total)
            filled = int(BAR_WIDTH * frac)
            bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}]"
            line = f"{self.label} {bar} {self.done}/{self.total} {100 * frac:3.0f}%  {rate:,.0f}/s"
        else:
            line = f"{self.label} {self.done}  {rate:,.0f}/s"
        self._width = max(self._width, len(line))
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Rates:
    """For ``jobq status --watch``: how fast jobs finished between two redraws, from the
    change in the store's counts (jobs pruned meanwhile can make a rate read low)."""

    STATES = ("completed", "dead", "expired")

    def __init__(self) -> None:
        self._last: tuple[float, dict[str, int]] | None = None

    def line(self, totals: dict[str, int], now: float | None = None) -> str | None:
        """``"last 2.0s: 41.5 completed/s, 0.5 dead/s, 0.0 expired/s"``; None the first time."""
        now = time.monotonic() if now is None else now
        last, self._last = self._last, (now, dict(totals))
        if last is None or now <= last[0]:
            return None
        seconds = now - last[0]
        parts = [
            f"{max(0, totals.get(s, 0) - last[1].get(s, 0)) / seconds:.1f} {s}/s"
            for s in self.STATES
        ]
        return f"last {seconds:.1f}s: " + ", ".join(parts)
