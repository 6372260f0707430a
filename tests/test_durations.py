"""The one duration parser: what the CLI's --every, --since/--until ages and --hot-days accept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from magsag.backends.durations import parse_duration
from magsag.backends.errors import ConfigError

from magsag.cli.common import parse_when
from magsag.cli.lake import parse_days, parse_every

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        (" 7D ", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1.5h", timedelta(minutes=90)),
        ("0d", timedelta(0)),
    ],
)
def test_units(text: str, want: timedelta) -> None:
    assert parse_duration(text, "--x") == want


@pytest.mark.parametrize(
    "text",
    [
        "",
        "7",  # no unit and none by default
        "7y",
        "-1d",
        "1e3s",
        "1,5h",
        "\u0663d",  # ARABIC-INDIC DIGIT THREE: a Unicode digit, not ASCII
        "\uff17d",  # FULLWIDTH DIGIT SEVEN
        "7\u00a0d",  # a no-break space between
        "d",
        "1h30m",
    ],
)
def test_only_ascii_digits_and_one_unit(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--x: .* is not a duration \(use 30m, 12h, 7d\)$"):
        parse_duration(text, "--x")


def test_a_bare_number_takes_the_default_unit() -> None:
    assert parse_duration("90", "--every", default_unit="s") == timedelta(seconds=90)
    assert parse_duration("7", "--hot-days", default_unit="d") == timedelta(days=7)
    with pytest.raises(ConfigError, match="or a plain number of seconds"):
        parse_duration("soon", "--every", default_unit="s")


def test_too_long_is_one_line_not_a_traceback() -> None:
    with pytest.raises(ConfigError, match="too long a duration"):
        parse_duration("99999999999999999999w", "--x")
    with pytest.raises(ConfigError, match=r"--since: .* reaches back before year 1"):
        parse_when("9999999d", "--since", now=NOW)


def test_every_cli_option_uses_it() -> None:
    assert parse_every("1h") == 3600 and parse_every("90") == 90
    with pytest.raises(ConfigError, match="--every"):
        parse_every("0s")
    with pytest.raises(ConfigError, match="--every"):
        parse_every("\u0661h")
    assert parse_days("7", "--hot-days") == 7 and parse_days("7d", "--since") == 7 and parse_days("1w", "--x") == 7
    with pytest.raises(ConfigError, match="whole number of days"):
        parse_days("36h", "--hot-days")
    with pytest.raises(ConfigError, match="--hot-days"):
        parse_days("\u0663", "--hot-days")  # int() would have read it
    assert parse_when("7d", "--since", now=NOW) == NOW - timedelta(days=7)
    assert parse_when("2026-03-01", "--since", now=NOW) == datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(ConfigError, match="--until"):
        parse_when("\u0667d", "--until", now=NOW)
