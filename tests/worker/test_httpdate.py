"""HTTP-date formatting and parsing (RFC 9110 §5.6.7), against email.utils where both are defined."""

from __future__ import annotations

import random
from email.utils import formatdate, mktime_tz, parsedate_tz

import pytest

from webcluster.worker.httpdate import format_http_date, http_date, parse_http_date

pytestmark = pytest.mark.timeout(30)

# RFC 9110 §5.6.7's own example, in its three formats
EXAMPLE = 784111777


def test_the_three_formats_of_the_rfc_example():
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == EXAMPLE  # IMF-fixdate
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == EXAMPLE  # obsolete RFC 850
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == EXAMPLE  # ANSI C's asctime()
    assert format_http_date(EXAMPLE) == "Sun, 06 Nov 1994 08:49:37 GMT"


def test_formatting_and_parsing_agree_with_email_utils():
    rng = random.Random(9110)
    for _ in range(20_000):
        t = rng.randrange(-(2**33), 2**34)  # years 1697 to 2514
        text = format_http_date(t)
        assert text == formatdate(t, usegmt=True)
        assert parse_http_date(text) == t == mktime_tz(parsedate_tz(text))


def test_a_two_digit_year_more_than_50_years_ahead_is_in_the_past():
    now = parse_http_date("Thu, 03 Dec 2026 00:00:00 GMT")
    assert parse_http_date("Sunday, 06-Nov-76 08:49:37 GMT", now) == parse_http_date(
        "Fri, 06 Nov 2076 08:49:37 GMT"
    )  # 50 years ahead: kept
    assert parse_http_date("Sunday, 06-Nov-77 08:49:37 GMT", now) == parse_http_date(
        "Sun, 06 Nov 1977 08:49:37 GMT"
    )
    assert parse_http_date("Sunday, 06-Nov-26 08:49:37 GMT", now) == parse_http_date(
        "Fri, 06 Nov 2026 08:49:37 GMT"
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Sun, 06 Nov 1994 08:49:37 +0000",  # a numeric zone: email.utils takes it, HTTP does not
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "sun, 06 nov 1994 08:49:37 gmt",  # case-sensitive (§5.6.7)
        "Sun, 6 Nov 1994 08:49:37 GMT",  # two digits of day
        "Sun,  06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",  # no such day
        "Sun, 29 Feb 1900 08:49:37 GMT",  # not a leap year
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT trailing",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun, 06-Nov-94 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",
        "Sun Nov  6 08:49:37 94",
        "1994-11-06T08:49:37Z",
        "784111777",
        "Sun, ０6 Nov 1994 08:49:37 GMT",  # a non-ASCII digit
    ],
)
def test_what_is_not_an_http_date_is_none(value):
    assert parse_http_date(value) is None


def test_leap_days_and_the_leap_second():
    assert parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT") == 951782400
    assert parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT") == parse_http_date(
        "Sun, 01 Jan 2017 00:00:00 GMT"
    )


def test_the_date_header_is_cached_per_second():
    assert http_date(EXAMPLE) == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(EXAMPLE + 0.9) is http_date(EXAMPLE)
    assert http_date(EXAMPLE + 1) == b"Sun, 06 Nov 1994 08:49:38 GMT"
