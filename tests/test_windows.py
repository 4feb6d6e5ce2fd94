"""Window math: every duration, aligned and anchored, across months, quarters, years, leap years."""

import datetime

import pytest

from rainbridge.counters.windows import Duration, human_reset, parse_duration, window

UTC = datetime.UTC


def ms(*args) -> int:
    return int(datetime.datetime(*args, tzinfo=UTC).timestamp() * 1000)


def iso(value: int) -> str:
    return datetime.datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("1m", Duration(1, "m")), ("30s", Duration(30, "s")), ("1h", Duration(1, "h")), ("1d", Duration(1, "d")),
     ("1w", Duration(1, "w")), ("1M", Duration(1, "M")), ("1Q", Duration(1, "Q")), ("1Y", Duration(1, "Y")), ("15m", Duration(15, "m"))],
)
def test_parse(text, parsed):
    assert parse_duration(text) == parsed


@pytest.mark.parametrize("bad", ["1x", "", "0m", "-1h", "1.5h", "h", "1 h", "1H", "01m", "1000000d", None, 5])
def test_parse_rejects(bad):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


NOW = ms(2024, 2, 29, 13, 47, 31)  # a leap day, a Thursday

ALIGNED = [
    ("30s", NOW, "2024-02-29 13:47:30", "2024-02-29 13:48:00"),
    ("1m", NOW, "2024-02-29 13:47:00", "2024-02-29 13:48:00"),
    ("15m", NOW, "2024-02-29 13:45:00", "2024-02-29 14:00:00"),
    ("7m", NOW, "2024-02-29 13:42:00", "2024-02-29 13:49:00"),
    ("7m", ms(2024, 2, 29, 13, 58), "2024-02-29 13:56:00", "2024-02-29 14:00:00"),  # clamped to the hour
    ("1h", NOW, "2024-02-29 13:00:00", "2024-02-29 14:00:00"),
    ("6h", NOW, "2024-02-29 12:00:00", "2024-02-29 18:00:00"),
    ("1d", NOW, "2024-02-29 00:00:00", "2024-03-01 00:00:00"),
    ("7d", NOW, "2024-02-29 00:00:00", "2024-03-01 00:00:00"),  # 29th..35th cut at the month end
    ("1w", NOW, "2024-02-26 00:00:00", "2024-03-04 00:00:00"),  # ISO week: Monday
    ("1w", ms(2024, 3, 3, 23, 59, 59), "2024-02-26 00:00:00", "2024-03-04 00:00:00"),
    ("1w", ms(2024, 3, 4), "2024-03-04 00:00:00", "2024-03-11 00:00:00"),
    ("1M", NOW, "2024-02-01 00:00:00", "2024-03-01 00:00:00"),
    ("1M", ms(2023, 2, 28, 23, 59), "2023-02-01 00:00:00", "2023-03-01 00:00:00"),
    ("1M", ms(2024, 12, 31, 23, 59), "2024-12-01 00:00:00", "2025-01-01 00:00:00"),
    ("2M", NOW, "2024-01-01 00:00:00", "2024-03-01 00:00:00"),
    ("1Q", NOW, "2024-01-01 00:00:00", "2024-04-01 00:00:00"),
    ("1Q", ms(2024, 11, 15), "2024-10-01 00:00:00", "2025-01-01 00:00:00"),
    ("5M", ms(2024, 11, 15), "2024-11-01 00:00:00", "2025-01-01 00:00:00"),  # clamped to the year
    ("1Y", NOW, "2024-01-01 00:00:00", "2025-01-01 00:00:00"),
    ("2Y", NOW, "2023-01-01 00:00:00", "2025-01-01 00:00:00"),
]


@pytest.mark.parametrize(("text", "now", "start", "end"), ALIGNED)
def test_calendar_aligned(text, now, start, end):
    w = window(parse_duration(text), now, calendar_aligned=True)
    assert (iso(w.start_ms), iso(w.end_ms)) == (start, end)
    assert w.start_ms <= now < w.end_ms


ANCHOR = ms(2024, 1, 31, 10, 0, 0)

ANCHORED = [
    ("1m", ms(2024, 1, 31, 10, 5, 30), "2024-01-31 10:05:00", "2024-01-31 10:06:00"),
    ("1h", ms(2024, 2, 1, 9, 59), "2024-02-01 09:00:00", "2024-02-01 10:00:00"),
    ("1d", ms(2024, 2, 1, 9, 59), "2024-01-31 10:00:00", "2024-02-01 10:00:00"),
    ("1d", ms(2024, 2, 1, 10, 0), "2024-02-01 10:00:00", "2024-02-02 10:00:00"),
    ("1w", ms(2024, 2, 7, 10, 0), "2024-02-07 10:00:00", "2024-02-14 10:00:00"),
    ("1M", ms(2024, 2, 15), "2024-01-31 10:00:00", "2024-02-29 10:00:00"),  # clamped: leap February
    ("1M", ms(2024, 2, 29, 10, 0), "2024-02-29 10:00:00", "2024-03-31 10:00:00"),  # back to the 31st
    ("1M", ms(2024, 4, 30, 10, 0), "2024-04-30 10:00:00", "2024-05-31 10:00:00"),
    ("1M", ms(2025, 2, 28, 12, 0), "2025-02-28 10:00:00", "2025-03-31 10:00:00"),  # non-leap February
    ("1Q", ms(2024, 5, 1), "2024-04-30 10:00:00", "2024-07-31 10:00:00"),
    ("1Y", ms(2025, 1, 31, 9, 0), "2024-01-31 10:00:00", "2025-01-31 10:00:00"),
]


@pytest.mark.parametrize(("text", "now", "start", "end"), ANCHORED)
def test_anchored(text, now, start, end):
    w = window(parse_duration(text), now, calendar_aligned=False, anchor_ms=ANCHOR)
    assert (iso(w.start_ms), iso(w.end_ms)) == (start, end)
    assert w.start_ms <= now < w.end_ms


def test_leap_day_anchor_yearly():
    anchor = ms(2024, 2, 29, 0, 0)
    w = window(parse_duration("1Y"), ms(2025, 6, 1), False, anchor)
    assert (iso(w.start_ms), iso(w.end_ms)) == ("2025-02-28 00:00:00", "2026-02-28 00:00:00")


@pytest.mark.parametrize("text", ["1m", "1h", "1d", "1w", "1M", "1Q", "1Y", "45s", "3d"])
@pytest.mark.parametrize("aligned", [True, False])
def test_windows_tile_time_without_gaps(text, aligned):
    d = parse_duration(text)
    t = ms(2023, 12, 30)
    w = window(d, t, aligned, ANCHOR)
    for _ in range(30):
        nxt = window(d, w.end_ms, aligned, ANCHOR)
        assert nxt.start_ms == w.end_ms and nxt.end_ms > nxt.start_ms
        assert window(d, w.end_ms - 1, aligned, ANCHOR) == w
        w = nxt


@pytest.mark.parametrize(("value", "text"), [(20, "20ms"), (1500, "1.5s"), (59_000, "59s"), (360_000, "6m0s"), (7_380_000, "2h3m"), (3 * 86_400_000, "3d0h")])
def test_human_reset(value, text):
    assert human_reset(value) == text
