"""Cron expressions and windows: when disruption budgets apply and when the scheduler runs.

Standard five-field cron (minute hour day-of-month month day-of-week, 0 or 7 = Sunday), evaluated with
croniter in an IANA time zone.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

from croniter import croniter

_DURATION = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*$")


def _zone(timezone: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r} (expected an IANA name such as 'UTC' or 'Europe/Berlin')") from None


def check_cron(expression: str, timezone: str = "UTC") -> None:
    """Raise ValueError with a readable message unless ``expression`` is a five-field cron expression."""
    _zone(timezone)
    if len(expression.split()) != 5:
        raise ValueError(f"cron expression {expression!r} must have 5 fields: minute hour day-of-month month day-of-week")
    if not croniter.is_valid(expression):
        raise ValueError(f"cron expression {expression!r} is not valid (e.g. '*/15 * * * *' or '0 22 * * 1-5')")


def parse_duration(text: str) -> dt.timedelta:
    """'2h', '90m', '1h30m', '1d' -> timedelta (positive)."""
    match = _DURATION.match(text or "")
    if not text or not match or not any(match.groups()):
        raise ValueError(f"duration {text!r} must look like '2h', '90m', '1h30m' or '1d'")
    days, hours, minutes = (int(g) if g else 0 for g in match.groups())
    value = dt.timedelta(days=days, hours=hours, minutes=minutes)
    if value <= dt.timedelta(0):
        raise ValueError(f"duration {text!r} must be longer than zero")
    return value


def window_open(expression: str, duration: str, now: dt.datetime, timezone: str = "UTC") -> bool:
    """Whether ``now`` falls in a window that opens when the cron expression fires and lasts ``duration``."""
    check_cron(expression, timezone)
    local = now.astimezone(_zone(timezone))
    last = croniter(expression, local + dt.timedelta(seconds=1)).get_prev(dt.datetime)
    return bool(last <= local < last + parse_duration(duration))


def next_fire(expression: str, after: dt.datetime, timezone: str = "UTC") -> dt.datetime:
    """The first time after ``after`` at which the cron expression fires (UTC)."""
    check_cron(expression, timezone)
    nxt = croniter(expression, after.astimezone(_zone(timezone))).get_next(dt.datetime)
    return nxt.astimezone(dt.UTC)
