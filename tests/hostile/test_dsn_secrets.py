"""Item 16: no part of a DSN that could be a secret is ever printed (issue 14).

A property test: DSN-like strings (with and without a scheme, odd ports, hosts, query
strings, passwords holding any character) whose password carries a marker go through
the error paths of the commands that take ``--dsn`` (and ``MAGSAG_STORAGE_DSN``); the
marker never appears in what the user sees.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli_helpers import magsag

MARKER = "Zq9MarkPw"
COMMANDS = [
    ("query",),
    ("stats",),
    ("sql", "SELECT 1"),
    ("init",),
    ("tier", "--dry-run"),
]

_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=6)
_password = st.builds(lambda a, b: a + MARKER + b, _text, _text)
_dsn = st.builds(
    lambda scheme, user, pw, host, port, tail: f"{scheme}{user}:{pw}@{host}{port}{tail}",
    st.sampled_from(["postgresql://", "postgres://", "", "pg://", "postgresql:", "postgresql:/"]),
    st.sampled_from(["user", "", "u%40x", "a b"]),
    _password,
    st.sampled_from(["127.0.0.1", "[::1]", "[::1", "", "localhost", "h.invalid"]),
    st.sampled_from([":1", ":99999", ":x", "", ":1:2"]),
    st.sampled_from(["/db", "", "/db?sslmode=disable", "/db?host=/nonexistent", "/db?password=other", "/d b"]),
)
_keyword_dsn = st.builds(
    lambda pw, quoted: f"host=127.0.0.1 port=1 password={quoted.format(pw)} user=u",
    _password,
    st.sampled_from(["{}", "'{}'", '"{}"']),
)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dsn=st.one_of(_dsn, _keyword_dsn), via_env=st.booleans())
def test_no_dsn_secret_in_any_error(tmp_path, command: tuple[str, ...], dsn: str, via_env: bool) -> None:
    env = {
        "MAGSAG_STORAGE_BACKEND": "postgres",
        "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake"),
        "PGCONNECT_TIMEOUT": "2",
    }
    args = ["data", *command]
    if via_env:
        env["MAGSAG_STORAGE_DSN"] = dsn
    else:
        args += ["--dsn", dsn]
    res = magsag(*args, env=env)
    shown = res.out + res.err
    assert MARKER not in shown, shown
    assert "Traceback" not in shown
    assert res.code in (0, 1, 2, 3), shown
