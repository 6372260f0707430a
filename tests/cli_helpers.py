"""Run the real ``magsag`` CLI in-process and capture what a user sees."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from typer.testing import CliRunner

from magsag.cli import app


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def magsag(*args: str, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner()
    res = runner.invoke(app, list(args), env=env, catch_exceptions=False)
    return Result(res.exit_code, res.stdout, res.stderr)
