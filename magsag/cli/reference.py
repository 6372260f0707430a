"""Generate docs/cli.md from the commands themselves: ``python3 -m magsag.cli.reference > docs/cli.md``.

tests/test_docs.py fails when the checked-in reference differs from what this prints, so
the CLI documentation cannot drift from the code.
"""

from __future__ import annotations

import inspect
from typing import Any

import typer

from magsag.cli import app

INTRO = """# `magsag data` command reference

Generated from the commands' own `--help` by `python3 -m magsag.cli.reference > docs/cli.md`;
a test fails when this file and the code disagree.

Every command reads settings from `MAGSAG_STORAGE_*` environment variables or `.env`
(see [configuration.md](configuration.md)); options given on the command line win.
Exit codes: `0` ok, `1` not found / no results / a failed operation, `2` usage or
configuration error, `3` locked by another job, `70` an unexpected internal error (a bug,
or an exception a custom backend raised outside the `StorageError` family; set
`MAGSAG_DEBUG=1` for its traceback), `130` interrupted (Ctrl-C). Errors are one line on
stderr, never a traceback. Commands that print tables take `--json` for scripts; `-h` is
`--help`. `--since` always means "newer than" (where a range starts); the one
cut-off that means "older than" is named so (`archive --older-than`, which still accepts
the specification's `--since`).
"""


def _option_rows(cmd: Any) -> list[str]:
    rows = []
    for p in cmd.params:
        if p.param_type_name == "argument":
            label = (p.metavar or p.name or "").upper()
            rows.append(f"| `{label}` | argument | {(getattr(p, 'help', '') or '').strip()} |")
        elif p.param_type_name == "option" and not p.hidden:
            names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
            default = "" if p.default in (None, False, ()) or p.is_flag else f" (default: `{p.default}`)"
            rows.append(f"| {names} | option | {(p.help or '').strip()}{default} |")
    return rows


def render() -> str:
    root = typer.main.get_command(app)
    data = root.commands["data"]  # type: ignore[attr-defined]
    out = [INTRO]
    groups: list[tuple[str, Any]] = []
    for name, cmd in sorted(data.commands.items()):
        if hasattr(cmd, "commands"):
            groups.extend((f"{name} {sub}", subcmd) for sub, subcmd in sorted(cmd.commands.items()))
        else:
            groups.append((name, cmd))
    for name, cmd in groups:
        out.append(f"## `magsag data {name}`\n")
        out.append(inspect.cleandoc(cmd.help or "") + "\n")
        rows = _option_rows(cmd)
        if rows:
            out.append("| name | kind | meaning |\n| --- | --- | --- |")
            out.extend(rows)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
