"""The one parser of durations in options and settings: ``90s``, ``30m``, ``1h``, ``7d``, ``2w``.

A number (ASCII digits, optionally a decimal part) and a unit: ``s``, ``m``, ``h``, ``d``,
``w`` (case-insensitive, spaces around allowed). A bare number takes the caller's
``default_unit`` when it has one (``--every 90`` is seconds, ``--hot-days 7`` days) and is
refused otherwise. Anything else, a value too large to be a duration included, is a
one-line :class:`~magsag.backends.errors.ConfigError` naming the option.
"""

from __future__ import annotations

import re
from datetime import timedelta

from magsag.backends.errors import ConfigError

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]?)\s*", re.ASCII | re.IGNORECASE)
EXAMPLES = "30m, 12h, 7d"


def parse_duration(text: str, option: str, *, default_unit: str | None = None) -> timedelta:
    """``text`` as a :class:`timedelta` (>= 0); ``option`` names the setting in errors."""
    m = _DURATION.fullmatch(text) if isinstance(text, str) else None
    unit = (m.group(2).lower() or default_unit) if m else None
    if m is None or unit not in UNITS:
        bare = f" or a plain number of {UNITS[default_unit]}" if default_unit in UNITS else ""
        raise ConfigError(f"{option}: {text!r} is not a duration (use {EXAMPLES}{bare})")
    try:
        return timedelta(**{UNITS[unit]: float(m.group(1))})
    except OverflowError:
        raise ConfigError(f"{option}: {text!r} is too long a duration") from None


def is_duration(text: str) -> bool:
    """Whether ``text`` is a duration with its unit (``7d``), as opposed to a date."""
    m = _DURATION.fullmatch(text)
    return m is not None and m.group(2).lower() in UNITS
