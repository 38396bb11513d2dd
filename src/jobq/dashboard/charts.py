"""The overview's charts as inline SVG, drawn on the server: no JavaScript, no chart library.

Colours come from CSS classes in the dashboard's stylesheet; each bar and point carries a
``<title>`` so that hovering shows its numbers. Every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape

from jobq.dashboard.data import Bucket, duration, percentile

WIDTH, HEIGHT = 720, 190
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 10, 22


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that is >= ``value`` (>= 1e-3)."""
    value = max(value, 1e-3)
    exp = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        candidate = step * 10.0**exp
        if candidate >= value * (1 - 1e-9):
            return candidate
    return 10.0 ** (exp + 1)  # pragma: no cover - the loop always returns


def _frame(y_max_label: str, y_mid_label: str, buckets: Sequence[Bucket]) -> list[str]:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = []
    for frac, label in ((0.0, y_max_label), (0.5, y_mid_label), (1.0, "0")):
        y = TOP + frac * plot_h
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
    n = len(buckets)
    for i in range(0, n + 1, max(1, n // 4)):
        x = LEFT + plot_w * i / max(1, n)
        minutes = n - i
        label = "now" if minutes == 0 else f"-{minutes}m"
        anchor = "start" if i == 0 else "end" if i >= n else "middle"
        parts.append(
            f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}">{label}</text>'
        )
    return parts


def _svg(label: str, parts: list[str]) -> Markup:
    body = "".join(parts)
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" preserveAspectRatio="xMidYMid meet">{body}</svg>'
    )


def throughput_chart(buckets: Sequence[Bucket]) -> Markup:
    """Stacked bars per minute: completed jobs, failed attempts, expired jobs."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max((b.completed + b.failed + b.expired for b in buckets), default=0)
    top = nice_ceiling(peak) if peak else 1.0
    top = max(top, 1.0)
    parts = _frame(f"{top:g}", f"{top / 2:g}", buckets)
    n = max(1, len(buckets))
    bar_w = plot_w / n
    for i, b in enumerate(buckets):
        x = LEFT + i * bar_w + 0.5
        y: float = TOP + plot_h
        title = (
            f"{b.start:%H:%M} UTC: {b.completed} completed, {b.failed} failed attempts, "
            f"{b.expired} expired"
        )
        for value, cls in ((b.completed, "ok"), (b.failed, "fail"), (b.expired, "late")):
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            parts.append(
                f'<rect class="bar {cls}" x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                f'height="{h:.1f}"><title>{escape(title)}</title></rect>'
            )
    return _svg("jobs per minute over the last hour", parts)


def latency_chart(buckets: Sequence[Bucket]) -> Markup:
    """Lines per minute: p95 and p50 of the wait before starting, p95 of the run time."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    series: list[tuple[str, str, list[float | None]]] = [
        ("wait p95", "wait", [percentile(b.waits, 0.95) for b in buckets]),
        ("wait p50", "wait50", [percentile(b.waits, 0.5) for b in buckets]),
        ("run p95", "run", [percentile(b.runs, 0.95) for b in buckets]),
    ]
    peak = max((v for _, _, vs in series for v in vs if v is not None), default=0.0)
    top = nice_ceiling(peak) if peak > 0 else 1.0
    parts = _frame(duration(top), duration(top / 2), buckets)
    n = max(1, len(buckets))
    step = plot_w / n
    for name, cls, values in series:
        segment: list[str] = []
        segments: list[list[str]] = []
        for i, v in enumerate(values):
            if v is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            x = LEFT + (i + 0.5) * step
            y = TOP + plot_h * (1 - min(v, top) / top)
            segment.append(f"{x:.1f},{y:.1f}")
            title = f"{buckets[i].start:%H:%M} UTC {name}: {duration(v)}"
            parts.append(
                f'<circle class="dot {cls}" cx="{x:.1f}" cy="{y:.1f}" r="2.2">'
                f"<title>{escape(title)}</title></circle>"
            )
        if segment:
            segments.append(segment)
        for seg in segments:
            if len(seg) > 1:
                parts.append(f'<polyline class="line {cls}" points="{" ".join(seg)}"/>')
    return _svg("wait and run time over the last hour", parts)
