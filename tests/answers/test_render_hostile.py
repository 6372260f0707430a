"""Issue 13 item 10 / issue 14 item 18: nothing from data, and no error message, is read as markup.

A property-based test (hypothesis) feeds arbitrary text — Rich markup, ``[link=…]``,
brackets, backslashes, emoji codes, ANSI escapes, control characters — through every
renderer of magsag/cli/render.py and the printers built on it, and checks that it prints
as itself (control characters as visible escapes) and never raises.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from magsag.cli import render
from magsag.cli.common import fail
from magsag.cli.live import event_line
from magsag.cli.query import _print_stats
from tests.cli_helpers import magsag

FRAGMENTS = st.sampled_from(
    ["[", "]", "[/]", "[bold]", "[/bold]", "[/x]", "[link=https://e.x]y[/link]", "\\", "\\[", ":smile:",
     "\x1b[31m", "\x1b]8;;https://e.x\x07", "\r", "\x07", "\x00", "\u202e", "task_ids=[t1, t2]", "[red"]
)  # fmt: skip
# printable text of any script (combining marks and format characters are left to the terminal)
CHARS = st.text(st.characters(exclude_categories=("Cs", "Mn", "Mc", "Me", "Cf", "Co")), max_size=40)
HOSTILE = st.lists(st.one_of(FRAGMENTS, CHARS), min_size=1, max_size=6).map("".join)

_IGNORED = re.compile(r"[\s\u2500-\u257f…]")  # whitespace (wrapping, padding) and box drawing


def _flat(text: str) -> str:
    return _IGNORED.sub("", text)


def _captured(fn, *args, **kw) -> str:  # type: ignore[no-untyped-def]
    with render.console.capture() as out, render.err_console.capture() as err:
        fn(*args, **kw)
    return out.get() + err.get()


def _shows(printed: str, value: str) -> bool:
    return _flat(render.safe(value)) in _flat(printed)


SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(value=HOSTILE, title=HOSTILE, column=HOSTILE)
def test_print_table_shows_values_as_written(value: str, title: str, column: str) -> None:
    # one column: a cell folded over several lines reads back in order
    printed = _captured(render.print_table, [{column: value}], [column], title=title)
    assert _shows(printed, value) and _shows(printed, title) and _shows(printed, column)
    assert "\x1b" not in printed
    wide = _captured(render.print_table, [{column: value, "n": 1}, {"n": None}], [column, "n"], widths={column: 9})
    assert "\x1b" not in wide


@SETTINGS
@given(key=HOSTILE, value=HOSTILE, nested=HOSTILE)
def test_print_kv_shows_values_as_written(key: str, value: str, nested: str) -> None:
    printed = _captured(render.print_kv, {key: value, "payload": {"k": nested}}, title=key)
    assert _shows(printed, key) and _shows(printed, value) and "\x1b" not in printed


@SETTINGS
@given(message=HOSTILE)
def test_error_messages_are_shown_as_written(message: str) -> None:
    printed = _captured(fail, message, 2)
    assert printed.startswith("error:") and _shows(printed, message) and "\x1b" not in printed


@SETTINGS
@given(msg=HOSTILE, run_id=HOSTILE, agent=HOSTILE)
def test_tail_lines_show_values_as_written(msg: str, run_id: str, agent: str) -> None:
    e = {"ts": "2026-12-07T06:20:00.000000+00:00", "level": "error", "msg": msg, "run_id": run_id, "agent_slug": agent}
    printed = _captured(render.console.print, event_line(e), soft_wrap=True)
    assert _shows(printed, msg.replace("\n", "\\n")) and "\x1b" not in printed


@SETTINGS
@given(url=HOSTILE, backend=HOSTILE)
def test_stats_lines_show_values_as_written(url: str, backend: str) -> None:
    stats = {"hot": {"backend": backend, "events": 1, "runs": 1}, "lake": {"exists": False, "url": url}}
    printed = _captured(_print_stats, stats)
    assert _shows(printed, url) and _shows(printed, backend) and "\x1b" not in printed


@pytest.fixture
def demo_db(tmp_path: Path) -> dict[str, str]:
    env = {"MAGSAG_STORAGE_BACKEND": "sqlite", "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db")}
    assert magsag("data", "demo", "--days", "1", "--runs-per-day", "1", "--json", env=env).code == 0
    return env


def test_the_repros_of_the_issue(demo_db: dict[str, str]) -> None:
    res = magsag("data", "query", "--run-id", "[/x]", env=demo_db)
    assert res.code == 1 and "run '[/x]' not found" in res.err
    res = magsag("data", "search", "[/bold]", env=demo_db)
    assert res.code == 1 and "Traceback" not in res.err + res.out
    text = "a [/bold] b [link=https://e.x]y[/link] task_ids=[t1, t2]"
    res = magsag("data", "sql", f"SELECT '{text}' AS v", env=demo_db)
    assert res.code == 0 and text in res.out
    res = magsag("data", "query", "--since", "[bold]x", env=demo_db)
    assert res.code == 2 and "'[bold]x'" in res.err
