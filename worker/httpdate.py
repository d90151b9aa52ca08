"""HTTP-date (RFC 9110 §5.6.7): the ``Date`` header formatted once per second, and the formatting and
parsing the static handler needs (``Last-Modified``, ``If-Modified-Since``, ``If-Range``).

Like nginx's ``ngx_cached_http_time``: one process-wide cache, replaced atomically (a tuple swap under the
GIL), so every pool thread reads it without a lock. Written here rather than taken from ``email.utils``,
which a worker would import for these three functions only (about 300 KiB of resident modules), and
whose parser accepts what is not an HTTP-date.
"""

from __future__ import annotations

import re
import time

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name: number for number, name in enumerate(_MONTHS, 1)}

# RFC 9110 §5.6.7: HTTP-date = IMF-fixdate / obs-date (rfc850-date / asctime-date), case-sensitive.
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
_IMF_FIXDATE = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) " + _MONTH + r" ([0-9]{4}) "
                          + _TIME + " GMT")  # fmt: skip
_RFC850_DATE = re.compile(r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), ([0-9]{2})-"
                          + _MONTH + r"-([0-9]{2}) " + _TIME + " GMT")  # fmt: skip
_ASCTIME_DATE = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) " + _MONTH + r" ([0-9 ][0-9]) " + _TIME
                           + r" ([0-9]{4})")  # fmt: skip


def format_http_date(seconds: float) -> str:
    """IMF-fixdate of a time in seconds since the epoch, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    t = time.gmtime(seconds)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")  # fmt: skip


def parse_http_date(value: str, now: float | None = None) -> int | None:
    """Seconds since the epoch of an HTTP-date in any of its three formats, or None when ``value`` is not
    one (a recipient then ignores the field: RFC 9110 §13.1.3). The day of the week is not checked
    (nginx and email.utils do not either); a date that does not exist (31 Feb, 25:00) is not a date."""
    m = _IMF_FIXDATE.fullmatch(value)
    if m is not None:
        day, month, year, hour, minute, second = m.groups()
        full_year = int(year)
    elif (m := _RFC850_DATE.fullmatch(value)) is not None:
        day, month, year, hour, minute, second = m.groups()
        # §5.6.7: a two-digit year more than 50 years in the future is the latest past year ending so
        this_year = time.gmtime(time.time() if now is None else now).tm_year
        full_year = this_year // 100 * 100 + int(year)
        if full_year > this_year + 50:
            full_year -= 100
    elif (m := _ASCTIME_DATE.fullmatch(value)) is not None:
        month, day, hour, minute, second, year = m.groups()  # day: "06" or " 6", int() takes both
        full_year = int(year)
    else:
        return None
    return _timegm(full_year, _MONTH_NUMBER[month], int(day), int(hour), int(minute), int(second))


def _timegm(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int | None:
    """UTC calendar time -> seconds since the epoch; None when no such time exists (60 s is a leap
    second, allowed by the grammar and counted as the next minute's first)."""
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    month_days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    if not (1 <= day <= month_days and hour <= 23 and minute <= 59 and second <= 60):
        return None
    # days from the civil date (the proleptic Gregorian calendar), epoch 1970-01-01
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return ((days * 24 + hour) * 60 + minute) * 60 + second


class _DateCache:
    __slots__ = ("entry",)

    def __init__(self) -> None:
        self.entry: tuple[int, bytes] = (0, b"")

    def get(self, now: float | None = None) -> bytes:
        second = int(time.time() if now is None else now)
        entry = self.entry
        if entry[0] != second:
            entry = (second, format_http_date(second).encode("ascii"))
            self.entry = entry
        return entry[1]


http_date = _DateCache().get
