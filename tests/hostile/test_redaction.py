"""Item 8: secret redaction is linear and absurd lengths are refused early (issue 14)."""

from __future__ import annotations

import pytest
from magsag.backends.errors import MAX_REDACT_CHARS, redact_dsn

from tests.cli_helpers import magsag
from tests.hostile.conftest import World, one_line


@pytest.mark.timeout(120)  # a hang guard only: the quadratic redaction took 13 minutes on 10 MB
@pytest.mark.parametrize(
    "pattern",
    ["a", "password='", "password", "pwd= ", "a:", "x://", "a@", " a:b@", "x://a:"],
)
def test_redaction_of_a_megabyte_of_adversarial_text(pattern: str) -> None:
    text = pattern * (MAX_REDACT_CHARS // len(pattern))
    out = redact_dsn(text + " postgresql://u:MARKER@h/db password=MARKER2")
    assert "MARKER" not in out
    assert redact_dsn("x" * (MAX_REDACT_CHARS + 1)) == f"<{MAX_REDACT_CHARS + 1} characters, not shown>"


@pytest.mark.timeout(120)
def test_a_ten_megabyte_lake_url_is_refused_in_one_line(world: World) -> None:
    before = world.files()
    env = {**world.env, "MAGSAG_STORAGE_LAKE_URL": "s3://" + "a" * 10_000_000}
    res = magsag("data", "stats", env=env)
    assert res.code == 2
    line = one_line(res.err)
    assert "MAGSAG_STORAGE_LAKE_URL" in line and "10000005 characters" in line and len(line) < 300
    assert world.files() == before


@pytest.mark.timeout(120)
def test_a_huge_run_id_is_refused_in_one_line(world: World) -> None:
    res = magsag("data", "query", "--run-id", "r" * 120_000, env=world.env)
    assert res.code == 2
    line = one_line(res.err)
    assert "--run-id" in line and "120000 characters" in line and len(line) < 300
