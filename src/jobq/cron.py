"""Cron expressions: parsing and next-fire times, with time zones, and no dependency.

Syntax (the five fields of Vixie cron)::

    ┌──────── minute        0-59
    │ ┌────── hour          0-23
    │ │ ┌──── day of month  1-31
    │ │ │ ┌── month         1-12 or JAN-DEC
    │ │ │ │ ┌ day of week   0-7 or SUN-SAT (0 and 7 are Sunday)
    * * * * *

Each field is ``*``, a value, a range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n`` (from ``a``
to the end of the field), or a comma-separated list of those; names are case-insensitive and
may be range ends (``MON-FRI``; ``SUN`` or ``0`` ending a range is day 7, so ``FRI-SUN``
works). The macros ``@hourly``, ``@daily`` (= ``@midnight``),
``@weekly``, ``@monthly`` and ``@yearly`` (= ``@annually``) stand for ``0 * * * *``,
``0 0 * * *``, ``0 0 * * 0``, ``0 0 1 * *`` and ``0 0 1 1 *``.

Day of month and day of week, as in Vixie cron: when both fields are restricted (neither starts
with ``*``) a day matches if EITHER matches (``0 0 1,15 * MON``: the 1st, the 15th, and every
Monday); when one of them starts with ``*`` (``*``, ``*/2``) a day must match both.

Time zones: ticks are wall-clock times in the schedule's zone (default UTC). Daylight saving
time changes are handled the way cronie / Vixie cron handle them:

* A **fixed-time** schedule (neither the minute nor the hour field starts with ``*``, e.g.
  ``30 2 * * *``) whose wall-clock time does not exist on a spring-forward day fires once at
  the first instant after the gap (02:30 in Europe/Berlin's 02:00→03:00 jump fires at 03:00
  CEST). In the repeated hour of an autumn fall-back it fires once, at the first occurrence.
* Any other schedule (``*/15 * * * *``, ``0 * * * *``) follows elapsed time: wall-clock times
  that do not exist are simply not there, and times of the repeated hour occur, and fire,
  twice (every 15 real minutes stays every 15 real minutes).

Every instant is a tz-aware UTC ``datetime`` in and out.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jobq.exceptions import ConfigurationError

__all__ = ["Cron"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]
    allowed: str  # what the error message says is allowed


_FIELDS = (
    _Field("minute", 0, 59, {}, "minutes are 0-59"),
    _Field("hour", 0, 23, {}, "hours are 0-23"),
    _Field("day-of-month", 1, 31, {}, "days of the month are 1-31"),
    _Field("month", 1, 12, {n: i + 1 for i, n in enumerate(_MONTHS)}, "months are 1-12 or JAN-DEC"),
    _Field(
        "day-of-week",
        0,
        7,
        {n: i for i, n in enumerate(_DAYS)},
        "days of the week are 0-7 (0 and 7 are Sunday) or SUN-SAT",
    ),
)

_ITEM_RE = re.compile(r"(?P<range>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>[0-9]+))?")
_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # Feb 29 happens, in leap years

_MINUTE = timedelta(minutes=1)
_EPOCH = datetime(1970, 1, 1)  # naive UTC
#: Offsets are probed this far apart when looking for a zone's transitions: two transitions
#: closer than this that cancel out would go unseen (no zone has any).
_PROBE = 7 * 86_400
#: Past this without a transition, a stretch of constant offset is cut into pieces.
_HORIZON = 366 * 86_400
_LAST_YEAR = 9998  # leaves room for offsets at the end of datetime's range


class _Bad(Exception):
    """A field-level problem, turned into a ConfigurationError naming the expression."""


@dataclass(frozen=True, slots=True)
class _Segment:
    """A stretch of UTC time (naive, seconds since the epoch ``[start, end)``) with one UTC
    offset; ``before`` is the offset just before ``start`` (equal to ``offset`` when ``start``
    is not a real transition)."""

    start: int
    end: int
    offset: int
    before: int


class Cron:
    """A parsed cron expression in a time zone. Build it with :meth:`Cron.parse`."""

    __slots__ = (
        "_days",
        "_dom_star",
        "_dow_star",
        "_hours",
        "_minutes",
        "_month_set",
        "_months",
        "_segments",
        "_tz",
        "_weekdays",
        "expression",
        "fixed",
        "timezone",
    )

    #: The expression as given (whitespace normalised; a macro stays a macro).
    expression: str
    #: The IANA name of the time zone whose wall-clock times the fields describe.
    timezone: str
    #: Whether this is a fixed-time schedule (neither minute nor hour starts with ``*``): see
    #: the module docstring for what that changes around daylight saving time changes.
    fixed: bool

    def __init__(self, expression: str, timezone: str | ZoneInfo = "UTC") -> None:
        if not isinstance(expression, str):
            raise ConfigurationError(
                f"a cron expression must be a string like '*/5 * * * *', got {expression!r}"
            )
        text = " ".join(expression.split())
        body = MACROS.get(text.lower(), text)
        if body.startswith("@"):
            raise ConfigurationError(
                f"invalid cron expression {expression!r}: unknown macro {text!r}; use one of "
                f"{', '.join(MACROS)} or five fields"
            )
        parts = body.split(" ") if body else []
        if len(parts) != 5:
            raise ConfigurationError(
                f"invalid cron expression {expression!r}: it has {len(parts)} fields; give 5: "
                "minute hour day-of-month month day-of-week (there is no seconds or year "
                "field), e.g. '*/5 * * * *'"
            )
        values: list[tuple[int, ...]] = []
        for field, part in zip(_FIELDS, parts, strict=True):
            try:
                values.append(_parse_field(field, part))
            except _Bad as exc:
                raise ConfigurationError(
                    f"invalid cron expression {expression!r}: {field.name} field {part!r}: "
                    f"{exc}; {field.allowed}"
                ) from None
        self.expression = text
        self._minutes, self._hours, self._days, self._months, dows = values
        self._month_set = frozenset(self._months)
        self._weekdays = frozenset(d % 7 for d in dows)
        self._dom_star = parts[2].startswith("*")
        self._dow_star = parts[4].startswith("*")
        self.fixed = not (parts[0].startswith("*") or parts[1].startswith("*"))
        self.timezone, self._tz = _zone(timezone, expression)
        self._segments: tuple[_Segment, _Segment | None] | None = None
        if (self._dom_star or self._dow_star) and not any(
            d <= _MAX_DAYS[m - 1] for m in self._months for d in self._days
        ):
            raise ConfigurationError(
                f"invalid cron expression {expression!r}: it never fires: no month it names "
                f"({parts[3]}) has the day of the month it names ({parts[2]})"
            )

    @classmethod
    def parse(cls, expression: str, timezone: str | ZoneInfo = "UTC") -> Cron:
        """Parse ``expression`` (5 fields or a macro) for wall-clock times in ``timezone`` (an
        IANA name such as ``"Europe/Berlin"``); raises :class:`jobq.ConfigurationError`
        naming what is wrong. The same as ``Cron(expression, timezone)``."""
        return cls(expression, timezone)

    def __repr__(self) -> str:
        return f"Cron({self.expression!r}, timezone={self.timezone!r})"

    def __str__(self) -> str:
        return self.expression if self.timezone == "UTC" else f"{self.expression} {self.timezone}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cron):
            return NotImplemented
        return (self.expression, self.timezone) == (other.expression, other.timezone)

    def __hash__(self) -> int:
        return hash((self.expression, self.timezone))

    # -- public ------------------------------------------------------------------------------

    def next_after(self, dt: datetime) -> datetime:
        """The first tick strictly after ``dt`` (tz-aware), as a UTC datetime."""
        t = self._next(_utc_us(dt, "dt"))
        if t is None:
            raise ConfigurationError(
                f"cron expression {self.expression!r} has no tick after {dt.isoformat()}"
            )
        return _from_us(t)

    def iter_after(self, dt: datetime) -> Iterator[datetime]:
        """Every tick strictly after ``dt``, in order (endless, for a schedule that fires)."""
        t: int | None = _utc_us(dt, "dt")
        while True:
            assert t is not None
            t = self._next(t)
            if t is None:
                return
            yield _from_us(t)

    def ticks_between(
        self, start: datetime, end: datetime, *, limit: int | None = None
    ) -> list[datetime]:
        """The ticks ``t`` with ``start < t <= end``, oldest first; at most ``limit`` of them."""
        stop = _utc_us(end, "end")
        out: list[datetime] = []
        t: int | None = _utc_us(start, "start")
        while limit is None or len(out) < limit:
            assert t is not None
            t = self._next(t)
            if t is None or t > stop:
                break
            out.append(_from_us(t))
        return out

    def last_at_or_before(self, dt: datetime, *, after: datetime | None = None) -> datetime | None:
        """The latest tick ``t <= dt`` (and ``t > after``, if given), or None."""
        stop = _utc_us(dt, "dt")
        floor = _utc_us(after, "after") if after is not None else None
        span = 60_000_000
        while True:
            probe = stop - span
            final = False
            if floor is not None and probe <= floor:
                probe, final = floor, True
            elif probe < _MIN_US:
                probe, final = _MIN_US, True
            t = self._next(probe)
            if t is not None and t <= stop:
                while True:  # ticks in (probe, stop]: few, as (stop - span/2, stop] had none
                    n = self._next(t)
                    if n is None or n > stop:
                        return _from_us(t)
                    t = n
            if final:
                return None
            span *= 2

    def matches(self, dt: datetime) -> bool:
        """Whether ``dt`` is a tick of this schedule."""
        us = _utc_us(dt, "dt")
        return self._next(us - 1) == us

    # -- wall-clock matching -----------------------------------------------------------------

    def _day_ok(self, year: int, month: int, day: int) -> bool:
        dom = day in self._days
        dow = (calendar.weekday(year, month, day) + 1) % 7 in self._weekdays
        if self._dom_star or self._dow_star:
            return dom and dow
        return dom or dow

    def _next_wall(self, start: datetime) -> datetime | None:
        """The first matching wall-clock minute at or after ``start`` (naive), or None."""
        if start.second or start.microsecond:
            start = start.replace(second=0, microsecond=0) + _MINUTE
        y, mo, d, h, mi = start.year, start.month, start.day, start.hour, start.minute
        months, hours, minutes = self._months, self._hours, self._minutes
        while y <= _LAST_YEAR:
            if mo not in self._month_set:
                i = bisect_left(months, mo)
                if i == len(months):
                    y, mo = y + 1, months[0]
                else:
                    mo = months[i]
                d, h, mi = 1, 0, 0
                continue
            last_day = calendar.monthrange(y, mo)[1]
            while d <= last_day:
                if not self._day_ok(y, mo, d):
                    d, h, mi = d + 1, 0, 0
                    continue
                i = bisect_left(hours, h)
                if i == len(hours):
                    d, h, mi = d + 1, 0, 0
                    continue
                if hours[i] != h:
                    h, mi = hours[i], 0
                j = bisect_left(minutes, mi)
                if j == len(minutes):
                    h, mi = h + 1, 0
                    continue
                return datetime(y, mo, d, h, minutes[j])
            mo, d, h, mi = mo + 1, 1, 0, 0
            if mo > 12:
                y, mo = y + 1, 1
        return None

    # -- instants ----------------------------------------------------------------------------

    def _next(self, after: int) -> int | None:
        """The first tick strictly after ``after`` (UTC microseconds since the epoch); ticks
        start in year 3, leaving room at the low end of datetime's range."""
        after = max(after, _MIN_US)
        seg = self._segment(after // 1_000_000)
        lo_wall = after + 1 + seg.offset * 1_000_000  # walls w with w - offset > after
        memo: tuple[int, int | None] | None = None  # (searched from, found)

        def wall_from(lo: int) -> int | None:
            nonlocal memo
            if memo is not None and memo[0] <= lo and (memo[1] is None or lo <= memo[1]):
                return memo[1]
            found = self._next_wall(_from_us(lo).replace(tzinfo=None)) if lo < _MAX_US else None
            w = None if found is None else _naive_us(found)
            memo = (lo, w)
            return w

        first = True
        while True:
            off = seg.offset * 1_000_000
            before = seg.before * 1_000_000
            start = seg.start * 1_000_000
            if not first:
                lo_wall = start + off
                if self.fixed and before < off:
                    # wall times in the gap [start+before, start+off) do not exist: a fixed-time
                    # tick there fires at the first instant after the gap
                    w = wall_from(start + before)
                    if w is not None and w < start + off:
                        return start
            if self.fixed and before > off:
                # wall times [start+off, start+before) repeat: a fixed-time tick fired already
                lo_wall = max(lo_wall, start + before)
            w = wall_from(lo_wall)
            if w is None:
                return None
            if w < seg.end * 1_000_000 + off:
                return w - off
            seg = self._following(seg)
            first = False

    def _offset(self, sec: int) -> int:
        # near the ends of datetime's range, the offset at the edge stands for beyond it
        sec = min(max(sec, _MIN_US // 1_000_000), _MAX_US // 1_000_000)
        off = datetime.fromtimestamp(sec, self._tz).utcoffset()
        assert off is not None
        return int(off.total_seconds())

    def _segment(self, sec: int) -> _Segment:
        """The stretch of constant offset containing UTC second ``sec``."""
        cached = self._segments
        if cached is not None:
            for seg in cached:
                if seg is not None and seg.start <= sec < seg.end:
                    return seg
        if self._tz is UTC:
            seg = _Segment(sec - _HORIZON, sec + _HORIZON, 0, 0)
        else:
            off = self._offset(sec)
            start, before = self._change_before(sec, off)
            seg = _Segment(start, self._change_after(sec, off), off, before)
        self._segments = (seg, None)
        return seg

    def _following(self, seg: _Segment) -> _Segment:
        cached = self._segments
        if cached is not None and cached[0] == seg and cached[1] is not None:
            return cached[1]
        if self._tz is UTC:
            nxt = _Segment(seg.end, seg.end + 2 * _HORIZON, 0, 0)
        else:
            off = self._offset(seg.end)
            nxt = _Segment(seg.end, self._change_after(seg.end, off), off, seg.offset)
        self._segments = (seg, nxt)
        return nxt

    def _change_after(self, sec: int, off: int) -> int:
        """The first second after ``sec`` whose offset differs from ``off`` (or, if there is
        none within the horizon, the horizon)."""
        lo = sec
        while lo - sec < _HORIZON:
            hi = lo + _PROBE
            if self._offset(hi) != off:
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if self._offset(mid) == off:
                        lo = mid
                    else:
                        hi = mid
                return hi
            lo = hi
        return lo

    def _change_before(self, sec: int, off: int) -> tuple[int, int]:
        """(start, offset before it) of the stretch of offset ``off`` that holds ``sec``."""
        hi = sec
        while sec - hi < _HORIZON:
            lo = hi - _PROBE
            before = self._offset(lo)
            if before != off:
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if self._offset(mid) == off:
                        hi = mid
                    else:
                        lo = mid
                return hi, self._offset(lo)
            hi = lo
        return hi, off


def _parse_field(field: _Field, text: str) -> tuple[int, ...]:
    if not text:
        raise _Bad("it is empty")
    out: set[int] = set()
    for item in text.split(","):
        m = _ITEM_RE.fullmatch(item)
        if m is None:
            raise _Bad(
                f"cannot read {item!r}: write *, a value, a range a-b, a step */n or a-b/n, "
                "or a comma-separated list of those"
            )
        rng, step_text = m.group("range"), m.group("step")
        if rng == "*":
            low, high = field.low, field.high
        else:
            ends = rng.split("-")
            low = _value(field, ends[0])
            high = _value(field, ends[1]) if len(ends) == 2 else (field.high if step_text else low)
            if field.name == "day-of-week" and high == 0 and low > 0:
                high = 7  # SAT-SUN, FRI-0: Sunday as the end of the week
            if low > high:
                raise _Bad(
                    f"range {rng!r} runs backwards; write it low-high, or as a list "
                    "(e.g. 22-2 as 22,23,0-2)"
                )
        step = 1
        if step_text is not None:
            step = int(step_text)
            if step < 1:
                raise _Bad(f"step {step_text!r} must be at least 1")
        out.update(range(low, high + 1, step))
    return tuple(sorted(out))


def _value(field: _Field, text: str) -> int:
    if text.isdigit():
        v = int(text)
    elif text.upper() in field.names:
        v = field.names[text.upper()]
    else:
        what = "a number or a name" if field.names else "a number"
        raise _Bad(f"{text!r} is not {what}")
    if not field.low <= v <= field.high:
        raise _Bad(f"{text!r} is out of range")
    return v


def _zone(timezone: object, expression: str) -> tuple[str, tzinfo]:
    if isinstance(timezone, ZoneInfo):
        timezone = timezone.key
    if not isinstance(timezone, str) or not timezone:
        raise ConfigurationError(
            f"timezone for cron expression {expression!r} must be an IANA name like "
            f"'Europe/Berlin' or 'UTC', got {timezone!r}"
        )
    if timezone == "UTC":
        return timezone, UTC
    try:
        return timezone, ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigurationError(
            f"unknown timezone {timezone!r} for cron expression {expression!r}: use an IANA "
            "name like 'Europe/Berlin', 'America/New_York' or 'UTC' (without a system time "
            "zone database, pip install tzdata)"
        ) from None


_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_US = -62_072_524_800_000_000  # 0003-01-01 UTC: room for probing offsets
_MAX_US = 253_370_764_800_000_000  # 9999-01-01 UTC


def _utc_us(dt: object, what: str) -> int:
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
        raise ConfigurationError(
            f"{what} must be a tz-aware datetime, e.g. datetime.now(timezone.utc), got {dt!r}"
        )
    delta = dt - _EPOCH_UTC
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(us: int) -> datetime:
    return _EPOCH_UTC + timedelta(microseconds=us)


def _naive_us(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
