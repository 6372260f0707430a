"""Item 13: odd numbers and overflowing values are refused at the door (issue 14):
exit 2, one line naming the option, ASCII digits only, nothing changed."""

from __future__ import annotations

import pytest

from tests.cli_helpers import magsag
from tests.hostile.conftest import World, one_line


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("query", "--limit", "99999999999999999999"), "--limit"),
        (("query", "--since", "99999999999d"), "--since"),
        (("query", "--until", "0001-01-01"), "--until"),
        (("query", "--until", "9999-12-31T23:59:59-14:00"), "--until"),
        (("query", "--since", "٢٠٢٦-01-01"), "--since"),
        (("search", "x", "--limit", "99999999999999999999"), "--limit"),
        (("search", "x", "--until", "0001-01-01"), "--until"),
        (("tier", "--every", "99999999999999999999d"), "--every"),
        (("tier", "--hot-days", "²"), "--hot-days"),
        (("tier", "--hot-days", "٧"), "--hot-days"),
        (("load", "clickhouse", "--since", "99999999999d"), "--since"),
        (("migrate", "--max-line-mb", "inf"), "--max-line-mb"),
        (("migrate", "--max-line-mb", "1e300"), "--max-line-mb"),
        (("report", "--days", "99999999999999999999"), "--days"),
        (("compact", "--partition", "2026-03-0٧"), "--partition"),
    ],
)
def test_out_of_range_options_exit_2_naming_the_option(world: World, args: tuple[str, ...], option: str) -> None:
    before_files, before_hot = world.files(), world.hot_events()
    res = magsag("data", *args, env=world.env)
    assert res.code == 2, res.out + res.err
    line = one_line(res.err)
    assert option in line and "internal error" not in line
    assert world.files() == before_files and world.hot_events() == before_hot


@pytest.mark.parametrize("name", ["a." * 5000 + "b", "a." * 4000 + "b", "a." * 200 + "b", "pkg.mod:Cls;x", "ｐkg.mod"])
def test_a_huge_dotted_backend_name_is_one_line(world: World, name: str) -> None:
    res = magsag("data", "query", env={**world.env, "MAGSAG_STORAGE_BACKEND": name})
    assert res.code == 2
    line = one_line(res.err)
    assert "MAGSAG_STORAGE_BACKEND" in line and len(line) < 400
