"""Cron expressions: parsing, errors, next-fire times, and daylight saving time.

The property tests draw field sets, render them as an expression, and check ``Cron`` against a
brute-force oracle that scans minute by minute and knows the sets it drew (not the parser).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobq import ConfigurationError
from jobq.cron import Cron

MIN = timedelta(minutes=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def ticks(expr: str, tz: str, start: datetime, n: int) -> list[datetime]:
    c = Cron.parse(expr, timezone=tz)
    out = []
    t = start
    for _ in range(n):
        t = c.next_after(t)
        out.append(t)
    return out


def local(ts: list[datetime], tz: str) -> list[str]:
    z = ZoneInfo(tz)
    return [t.astimezone(z).strftime("%m-%d %H:%M%z") for t in ts]


# -- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "first"),
    [
        ("* * * * *", utc(2030, 1, 1, 0, 1)),
        ("*/5 * * * *", utc(2030, 1, 1, 0, 5)),
        ("1-30/2 * * * *", utc(2030, 1, 1, 0, 1)),
        ("7/20 * * * *", utc(2030, 1, 1, 0, 7)),
        ("0 12 * * *", utc(2030, 1, 1, 12)),
        ("15,45 3 * * *", utc(2030, 1, 1, 3, 15)),
        ("0 0 1 FEB *", utc(2030, 2, 1)),
        ("0 0 * * mon-fri", utc(2030, 1, 2)),  # 2030-01-01 is a Tuesday
        ("0 0 * * SAT", utc(2030, 1, 5)),
        ("0 0 * * 0", utc(2030, 1, 6)),
        ("0 0 * * 7", utc(2030, 1, 6)),
        ("0 0 * * 5-7", utc(2030, 1, 4)),
        ("0 0 * * SAT-SUN", utc(2030, 1, 5)),
        ("0 0 * * sun-sat/6", utc(2030, 1, 5)),
        ("0 0 29 2 *", utc(2032, 2, 29)),
        ("@hourly", utc(2030, 1, 1, 1)),
        ("@daily", utc(2030, 1, 2)),
        ("@midnight", utc(2030, 1, 2)),
        ("@weekly", utc(2030, 1, 6)),
        ("@monthly", utc(2030, 2, 1)),
        ("@yearly", utc(2031, 1, 1)),
        ("@ANNUALLY", utc(2031, 1, 1)),
        ("  0   12 * *  *  ", utc(2030, 1, 1, 12)),
    ],
)
def test_parse_and_first_tick(expr: str, first: datetime) -> None:
    assert Cron.parse(expr).next_after(utc(2030, 1, 1)) == first


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    # Vixie rule: both restricted -> either matches (the 13th, and every Friday)
    got = ticks("0 0 13 * FRI", "UTC", utc(2030, 1, 1), 6)
    assert [t.day for t in got] == [4, 11, 13, 18, 25, 1]
    # one starts with '*' -> both must match (Friday the 13th, on odd days: */2 is "star")
    got = ticks("0 0 13 * *", "UTC", utc(2030, 1, 1), 2)
    assert [(t.month, t.day) for t in got] == [(1, 13), (2, 13)]
    got = ticks("0 0 */2 * FRI", "UTC", utc(2030, 1, 1), 3)
    assert all(t.weekday() == 4 and t.day % 2 == 1 for t in got)
    assert ticks("0 0 13 * 5", "UTC", utc(2030, 9, 1), 1) == ticks(
        "0 0 13 * FRI", "UTC", utc(2030, 9, 1), 1
    )


@pytest.mark.parametrize(
    ("expr", "fragments"),
    [
        ("*/5 25 * * *", ["'*/5 25 * * *'", "hour field '25'", "out of range", "0-23"]),
        ("60 * * * *", ["minute field '60'", "0-59"]),
        ("0 0 0 * *", ["day-of-month field '0'", "1-31"]),
        ("0 0 * 13 *", ["month field '13'", "1-12 or JAN-DEC"]),
        ("0 0 * * 8", ["day-of-week field '8'", "0-7", "SUN-SAT"]),
        ("0 0 * FOO *", ["month field 'FOO'", "not a number or a name"]),
        ("0 0 * * MON-FOO", ["day-of-week field 'MON-FOO'"]),
        ("JAN * * * *", ["minute field 'JAN'", "not a number"]),
        ("5-1 * * * *", ["range '5-1' runs backwards"]),
        ("0 0 * * FRI-MON", ["range 'FRI-MON' runs backwards"]),
        ("*/0 * * * *", ["step '0' must be at least 1"]),
        ("1,,2 * * * *", ["minute field '1,,2'", "cannot read ''"]),
        ("-1 * * * *", ["minute field '-1'"]),
        ("* * * *", ["has 4 fields", "give 5"]),
        ("0 * * * * *", ["has 6 fields", "no seconds or year field"]),
        ("", ["has 0 fields"]),
        ("@reboot", ["unknown macro '@reboot'", "@hourly"]),
        ("0 0 30 2 *", ["never fires", "(2)", "(30)"]),
        ("0 0 31 4,6,9,11 *", ["never fires"]),
    ],
)
def test_invalid_expressions_name_the_field_and_range(expr: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigurationError) as exc:
        Cron.parse(expr)
    message = str(exc.value)
    assert f"{expr!r}" in message
    for f in fragments:
        assert f in message, message


def test_day_31_in_some_month_and_dow_or_rule_are_fine() -> None:
    Cron.parse("0 0 31 * *")
    Cron.parse("0 0 30 2 MON")  # both restricted: fires every Monday of February
    assert ticks("0 0 30 2 MON", "UTC", utc(2030, 1, 1), 1) == [utc(2030, 2, 4)]


def test_bad_timezone_and_types() -> None:
    with pytest.raises(ConfigurationError, match="unknown timezone 'Mars/Olympus'"):
        Cron.parse("* * * * *", timezone="Mars/Olympus")
    with pytest.raises(ConfigurationError, match=r"unknown timezone '\.\./etc/passwd'"):
        Cron.parse("* * * * *", timezone="../etc/passwd")
    with pytest.raises(ConfigurationError, match="must be a string"):
        Cron.parse(5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="tz-aware"):
        Cron.parse("* * * * *").next_after(datetime(2030, 1, 1))


def test_value_semantics() -> None:
    a = Cron.parse("0 12 * * *", timezone="Europe/Berlin")
    assert a == Cron("0  12 * * *", ZoneInfo("Europe/Berlin"))
    assert a != Cron.parse("0 12 * * *")
    assert len({a, Cron.parse("0 12 * * *", "Europe/Berlin")}) == 1
    assert repr(a) == "Cron('0 12 * * *', timezone='Europe/Berlin')"
    assert str(a) == "0 12 * * * Europe/Berlin"
    assert str(Cron.parse("@daily")) == "@daily"
    assert a.fixed and not Cron.parse("*/5 3 * * *").fixed and not Cron.parse("0 * * * *").fixed


def test_input_in_any_zone_output_in_utc() -> None:
    c = Cron.parse("0 12 * * *", timezone="Europe/Berlin")
    t = c.next_after(datetime(2030, 1, 1, 13, 0, tzinfo=ZoneInfo("Europe/Berlin")))
    assert t == utc(2030, 1, 2, 11) and t.tzinfo is UTC


def test_ticks_between_and_last_at_or_before() -> None:
    c = Cron.parse("*/5 * * * *")
    start, end = utc(2030, 1, 1), utc(2030, 1, 1, 0, 20)
    assert c.ticks_between(start, end) == [utc(2030, 1, 1, 0, m) for m in (5, 10, 15, 20)]
    assert c.ticks_between(start, end, limit=2) == [utc(2030, 1, 1, 0, 5), utc(2030, 1, 1, 0, 10)]
    assert c.ticks_between(end, start) == []
    assert c.last_at_or_before(utc(2030, 1, 1, 0, 21)) == utc(2030, 1, 1, 0, 20)
    assert c.last_at_or_before(utc(2030, 1, 1, 0, 20)) == utc(2030, 1, 1, 0, 20)
    assert c.last_at_or_before(utc(2030, 1, 1, 0, 21), after=utc(2030, 1, 1, 0, 20)) is None
    yearly = Cron.parse("@yearly", "Europe/Berlin")
    assert yearly.last_at_or_before(utc(2030, 6, 1)) == utc(2029, 12, 31, 23)
    leap = Cron.parse("0 0 29 2 *")
    assert leap.last_at_or_before(utc(2030, 6, 1)) == utc(2028, 2, 29)
    assert leap.matches(utc(2028, 2, 29)) and not leap.matches(utc(2028, 2, 29, 0, 0, 1))
    it = c.iter_after(start)
    assert [next(it) for _ in range(3)] == c.ticks_between(start, utc(2030, 1, 1, 0, 15))


def test_rare_schedules_are_found_quickly() -> None:
    # Feb 29 that is a Sunday (one of them restricted with '*': both must match)
    t = Cron.parse("0 0 29 2 */7", "America/New_York").next_after(utc(2030, 1, 1))
    local_t = t.astimezone(ZoneInfo("America/New_York"))
    assert (local_t.month, local_t.day, local_t.weekday()) == (2, 29, 6)
    assert local_t.year == 2032


# -- daylight saving time ------------------------------------------------------------------------
# Europe/Berlin: 2030-03-31 02:00 CET -> 03:00 CEST (01:00Z); 2030-10-27 03:00 CEST -> 02:00 CET
# (01:00Z). America/New_York: 2030-03-10 02:00 -> 03:00; 2030-11-03 02:00 -> 01:00.


def test_fixed_time_in_the_spring_gap_fires_once_at_the_end_of_the_gap() -> None:
    got = ticks("30 2 * * *", "Europe/Berlin", utc(2030, 3, 29), 4)
    assert local(got, "Europe/Berlin") == [
        "03-29 02:30+0100",
        "03-30 02:30+0100",
        "03-31 03:00+0200",  # 02:30 does not exist that day: the first instant after the gap
        "04-01 02:30+0200",
    ]
    # several fixed times in the gap collapse into that one tick
    got = ticks("0,15,30,45 2 * * *", "America/New_York", utc(2030, 3, 10), 2)
    assert local(got, "America/New_York") == ["03-10 03:00-0400", "03-11 02:00-0400"]


def test_fixed_time_in_the_repeated_autumn_hour_fires_once() -> None:
    got = ticks("30 2 * * *", "Europe/Berlin", utc(2030, 10, 26), 3)
    assert got == [utc(2030, 10, 26, 0, 30), utc(2030, 10, 27, 0, 30), utc(2030, 10, 28, 1, 30)]
    got = ticks("30 1 * * *", "America/New_York", utc(2030, 11, 2, 12), 2)
    assert got == [utc(2030, 11, 3, 5, 30), utc(2030, 11, 4, 6, 30)]  # the EDT 01:30 only


def test_wildcard_schedules_follow_elapsed_time_across_changes() -> None:
    spring = ticks("*/30 * * * *", "Europe/Berlin", utc(2030, 3, 31, 0), 3)
    assert spring == [utc(2030, 3, 31, 0, 30), utc(2030, 3, 31, 1), utc(2030, 3, 31, 1, 30)]
    assert local(spring, "Europe/Berlin") == [
        "03-31 01:30+0100",
        "03-31 03:00+0200",
        "03-31 03:30+0200",
    ]
    autumn = ticks("*/30 * * * *", "Europe/Berlin", utc(2030, 10, 26, 23, 45), 5)
    assert autumn == [utc(2030, 10, 27, 0) + i * timedelta(minutes=30) for i in range(5)]
    assert local(autumn, "Europe/Berlin") == [
        "10-27 02:00+0200",
        "10-27 02:30+0200",
        "10-27 02:00+0100",  # the repeated hour runs again: every 30 real minutes
        "10-27 02:30+0100",
        "10-27 03:00+0100",
    ]
    hourly = ticks("0 * * * *", "America/New_York", utc(2030, 11, 3, 4), 4)
    assert [t.hour for t in hourly] == [5, 6, 7, 8]  # one hour apart, 01:00 twice


def test_midnight_in_a_midnight_gap() -> None:
    # Sao Paulo 2018-11-04 00:00 -> 01:00 (-03 -> -02): the daily tick fires at 01:00
    got = ticks("0 0 * * *", "America/Sao_Paulo", utc(2018, 11, 3, 12), 2)
    assert local(got, "America/Sao_Paulo") == ["11-04 01:00-0200", "11-05 00:00-0200"]


def test_half_hour_shift() -> None:
    # Lord Howe 2030-10-06 02:00 +1030 -> 02:30 +11: fixed 02:15 fires at 02:30
    got = ticks("15 2 * * *", "Australia/Lord_Howe", utc(2030, 10, 5), 2)
    assert local(got, "Australia/Lord_Howe") == ["10-06 02:30+1100", "10-07 02:15+1100"]


def test_a_skipped_day() -> None:
    # Samoa skipped 2011-12-30 entirely (UTC-10 -> UTC+14): its noon fires when the gap ends
    got = ticks("0 12 * * *", "Pacific/Apia", utc(2011, 12, 29, 0), 3)
    assert local(got, "Pacific/Apia") == [
        "12-29 12:00-1000",
        "12-31 00:00+1400",
        "12-31 12:00+1400",
    ]


# -- property tests against a brute-force oracle -------------------------------------------------


@dataclass(frozen=True)
class Spec:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    dom_star: bool
    dow_star: bool
    fixed: bool

    def wall_matches(self, t: datetime) -> bool:
        if t.minute not in self.minutes or t.hour not in self.hours:
            return False
        if t.month not in self.months:
            return False
        dom = t.day in self.days
        dow = (t.weekday() + 1) % 7 in self.weekdays
        return (dom and dow) if (self.dom_star or self.dow_star) else (dom or dow)


MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


@st.composite
def field(
    draw: st.DrawFn, low: int, high: int, names: list[str] | None, base: int
) -> tuple[str, frozenset[int], bool]:
    def name(v: int) -> str:
        if names and v - base < len(names) and draw(st.booleans()):
            return names[(v - base) % len(names)]
        return str(v)

    kind = draw(st.sampled_from(["star", "star_step", "list"]))
    if kind == "star":
        return "*", frozenset(range(low, high + 1)), True
    if kind == "star_step":
        step = draw(st.integers(1, high - low + 1))
        return f"*/{step}", frozenset(range(low, high + 1, step)), True
    items, values = [], set()
    for _ in range(draw(st.integers(1, 3))):
        a = draw(st.integers(low, high))
        shape = draw(st.sampled_from(["value", "range", "range_step"]))
        if shape == "value":
            items.append(name(a))
            values.add(a)
            continue
        b = draw(st.integers(a, high))
        if shape == "range":
            items.append(f"{name(a)}-{name(b)}")
            values.update(range(a, b + 1))
        else:
            step = draw(st.integers(1, 10))
            items.append(f"{name(a)}-{name(b)}/{step}")
            values.update(range(a, b + 1, step))
    return ",".join(items), frozenset(values), False


@st.composite
def specs(draw: st.DrawFn, frequent: bool = True) -> Spec:
    minute = draw(field(0, 59, None, 0))
    hour = draw(field(0, 23, None, 0))
    # keep ticks frequent enough for a minute scan: days and months mostly '*'
    if frequent:
        dom = draw(st.one_of(st.just(("*", frozenset(range(1, 32)), True)), field(1, 31, None, 1)))
        month = ("*", frozenset(range(1, 13)), True)
    else:
        dom = draw(field(1, 31, None, 1))
        month = draw(field(1, 12, MONTHS, 1))
    dow = draw(field(0, 7, DAYS, 0))
    days_ok = dom[2] or dow[2]
    if days_ok and not any(d <= calendar.monthrange(2028, m)[1] for m in month[1] for d in dom[1]):
        dom = ("*", frozenset(range(1, 32)), True)
    text = " ".join(f[0] for f in (minute, hour, dom, month, dow))
    return Spec(
        text=text,
        minutes=minute[1],
        hours=hour[1],
        days=dom[1],
        months=month[1],
        weekdays=frozenset(d % 7 for d in dow[1]),
        dom_star=dom[2],
        dow_star=dow[2],
        fixed=not (minute[2] or hour[2]),
    )


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Sao_Paulo"]
#: instants near daylight saving changes of those zones, to start from
CHANGES = [
    utc(2030, 3, 31, 1),
    utc(2030, 10, 27, 1),
    utc(2030, 3, 10, 7),
    utc(2030, 11, 3, 6),
    utc(2030, 4, 6, 15),
    utc(2030, 10, 5, 15, 30),
    utc(2018, 11, 4, 3),
    utc(2019, 2, 17, 2),
]


def is_tick(spec: Spec, zone: ZoneInfo, u: datetime) -> bool:
    """The oracle, for an instant ``u`` on a whole UTC minute (these zones' offsets are whole
    minutes): see the cron module docstring for the rules it encodes."""
    lt = u.astimezone(zone)
    if spec.wall_matches(lt) and (not spec.fixed or lt.fold == 0):
        return True
    if spec.fixed:
        before = (u - timedelta(seconds=1)).astimezone(zone).utcoffset()
        after = lt.utcoffset()
        assert before is not None and after is not None
        if before < after:  # u ends a gap: did a fixed time fall in it?
            wall = u.replace(tzinfo=None) + before
            while wall < u.replace(tzinfo=None) + after:
                if spec.wall_matches(wall):
                    return True
                wall += MIN
    return False


starts = st.one_of(
    st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC)),
    st.tuples(st.sampled_from(CHANGES), st.integers(-300, 300)).map(
        lambda p: p[0] + timedelta(minutes=p[1], seconds=p[1] % 7)
    ),
)

SCAN = timedelta(days=2)


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(spec=specs(), tz=st.sampled_from(ZONES), start=starts)
def test_next_after_against_a_minute_scan(spec: Spec, tz: str, start: datetime) -> None:
    cron = Cron.parse(spec.text, timezone=tz)
    assert cron.fixed == spec.fixed
    zone = ZoneInfo(tz)
    t = start
    for _ in range(3):
        nxt = cron.next_after(t)
        assert nxt > t and nxt.tzinfo is UTC
        assert nxt.second == 0 and nxt.microsecond == 0
        assert is_tick(spec, zone, nxt), (spec.text, tz, t, nxt)
        # no tick skipped: scan every minute between (bounded)
        u = t.replace(second=0, microsecond=0) + MIN
        while u < nxt and u < t + SCAN:
            assert not is_tick(spec, zone, u), (spec.text, tz, t, u, nxt)
            u += MIN
        assert cron.last_at_or_before(nxt) == nxt
        assert cron.last_at_or_before(nxt - timedelta(microseconds=1), after=t) is None
        assert cron.matches(nxt)
        t = nxt


@settings(max_examples=100, deadline=None, database=None)
@given(spec=specs(frequent=False), tz=st.sampled_from(ZONES), start=starts)
def test_rare_schedules_are_consistent(spec: Spec, tz: str, start: datetime) -> None:
    cron = Cron.parse(spec.text, timezone=tz)
    zone = ZoneInfo(tz)
    a = cron.next_after(start)
    b = cron.next_after(a)
    assert start < a < b
    assert is_tick(spec, zone, a) and is_tick(spec, zone, b)
    assert cron.ticks_between(start, b) == [a, b]
    assert cron.last_at_or_before(b - timedelta(microseconds=1)) == a
    last = cron.last_at_or_before(start)
    assert last is not None and last <= start and cron.next_after(last) == a
