"""Everything the CLI prints to a terminal goes through here: tables, key/value lists, lines.

Values come from data (agent messages, run ids, SQL results, error text) and may hold
anything, so nothing printed is read as Rich markup: both consoles have markup, emoji and
highlighting off, cells and messages are plain :class:`~rich.text.Text`, and control
characters (ANSI escapes, carriage returns, bells) are shown as ``\\x1b``-style escapes
instead of reaching the terminal. Styles are applied to literal text only (:func:`styled`).
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from magsag.backends import jsontext

# Piped output is not cut at 80 columns: scripts and logs get whole lines.
console = Console(
    highlight=False, markup=False, emoji=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200
)
err_console = Console(stderr=True, highlight=False, markup=False, emoji=False)

# C0 controls except tab/newline, DEL, C1 controls, and the bidi/line separators that reorder a line
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def safe(value: Any) -> str:
    """``value`` as text that prints as itself: control characters become visible escapes."""
    text = value if isinstance(value, str) else str(value)
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def plain(value: Any, style: str | None = None) -> Text:
    """A :class:`Text` of ``value``, never parsed as markup."""
    return Text(safe(value), style=style or "")


def styled(*parts: Any) -> Text:
    """One line from parts: ``"literal"`` / ``value`` (plain) or ``(text, style)`` pairs."""
    line = Text()
    for part in parts:
        if isinstance(part, tuple):
            line.append(safe(part[0]), style=part[1])
        else:
            line.append(safe(part))
    return line


def say(*parts: Any, err: bool = False) -> None:
    """Print one line (see :func:`styled`) on stdout, or stderr with ``err=True``."""
    (err_console if err else console).print(styled(*parts), soft_wrap=True)


def error(message: str) -> None:
    """``error: <message>`` on stderr; the message is shown as written."""
    err_console.print(styled(("error:", "bold red"), " ", message), soft_wrap=True)


def show_flags_as_flags() -> None:
    """``--json`` in ``--help`` is a flag, not ``--json <bool>`` (typer labels every option with its type)."""
    from typer.core import TyperOption

    if getattr(TyperOption.display_type_rich, "_magsag_flags", False):
        return
    labelled = TyperOption.display_type_rich

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if self.is_flag else labelled(self, ctx)

    display_type_rich._magsag_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


def print_json(value: Any) -> None:
    sys.stdout.write(jsontext.pretty(value, default=str) + "\n")
    sys.stdout.flush()


def cell_text(value: Any, width: int | None = None) -> str:
    """One table cell: JSON for objects, compact UTC timestamps, short floats, cut at ``width``."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        text = jsontext.dumps(value, default=str)
    elif isinstance(value, str) and len(value) == 32 and value[10] == "T" and value.endswith("+00:00"):
        text = value[:10] + " " + value[11:23]  # ISO UTC timestamp -> compact, millisecond precision
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    text = safe(text)
    if width and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def print_table(
    rows: Sequence[dict[str, Any]],
    columns: Iterable[str],
    *,
    title: str | None = None,
    widths: dict[str, int] | None = None,
) -> None:
    cols = list(columns)
    widths = widths or {}
    if not rows:
        err_console.print(plain(title or "no rows"))
        return
    table = Table(title=plain(title) if title else None, show_lines=False, header_style="bold", expand=False)
    for c in cols:
        table.add_column(plain(c), overflow="fold", max_width=widths.get(c))
    for row in rows:
        table.add_row(*(Text(cell_text(row.get(c), widths.get(c))) for c in cols))
    console.print(table)


def print_kv(pairs: dict[str, Any], *, title: str | None = None) -> None:
    table = Table(title=plain(title) if title else None, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for k, v in pairs.items():
        table.add_row(plain(k), Text(cell_text(v)))
    console.print(table)


# ------------------------------------------------------------------ formats
TEXT_FORMATS = ("table", "json", "jsonl", "csv", "tsv")
JSON_COLUMNS = ("payload", "metrics")  # JSON text in the store: written as JSON objects, not strings


def pick_format(fmt: str | None, json_out: bool, allowed: Sequence[str] = TEXT_FORMATS) -> str:
    """The output format from ``--format`` and its ``--json`` shortcut (one usage error if they disagree)."""
    from magsag.backends.errors import ConfigError

    chosen = (fmt or "").strip().lower() or ("json" if json_out else "table")
    if chosen not in allowed:
        raise ConfigError(f"--format must be one of {', '.join(allowed)}, got {fmt!r}")
    if json_out and chosen != "json":
        raise ConfigError(f"--json and --format {chosen} disagree: give one of them")
    return chosen


def json_fields(row: dict[str, Any]) -> dict[str, Any]:
    """``payload``/``metrics`` given as JSON text become the objects they hold."""
    out = dict(row)
    for key in JSON_COLUMNS:
        value = out.get(key)
        if isinstance(value, str) and value[:1] in ("{", "["):
            with contextlib.suppress(ValueError):
                out[key] = jsontext.loads(value)
    return out


def _flat_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return jsontext.dumps(value, default=str)
    return value


def render_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> str:
    """``rows`` as json, jsonl, csv or tsv text (the columns in this order)."""
    import csv
    import io

    if fmt in ("json", "jsonl"):
        picked = [json_fields({c: r.get(c) for c in columns}) for r in rows]
        if fmt == "json":
            return jsontext.pretty(picked, default=str) + "\n"
        return "".join(jsontext.dumps(r, default=str) + "\n" for r in picked)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", delimiter="\t" if fmt == "tsv" else ",")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([_flat_value(r.get(c)) for c in columns])
    return buf.getvalue()


def write_text(text: str, output: Any, what: str) -> None:
    """``text`` to stdout, or to the file ``output`` (then one line on stderr says so)."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from pathlib import Path

    Path(output).write_text(text, encoding="utf-8")
    err_console.print(plain(f"wrote {what} to {output}"))


def emit(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    fmt: str,
    output: Any = None,
    *,
    title: str | None = None,
    widths: dict[str, int] | None = None,
    value: Any = None,
) -> None:
    """Print rows in ``fmt``; ``value`` (when given) is what ``json`` prints instead of the rows."""
    if fmt == "table":
        if output is None:
            print_table(rows, columns, title=title, widths=widths)
            return
        with console.capture() as cap:
            print_table(rows, columns, title=title, widths=widths)
        write_text(cap.get(), output, f"{len(rows)} rows")
        return
    if fmt == "json" and value is not None:
        write_text(jsontext.pretty(value, default=str) + "\n", output, "the result")
        return
    write_text(render_rows(rows, columns, fmt), output, f"{len(rows)} rows")


def check_output(fmt: str, output: Any) -> None:
    from magsag.backends.errors import ConfigError

    if fmt == "parquet" and output is None:
        raise ConfigError("--format parquet needs --output PATH")


def count_title(shown: int, found: int, noun: str, asked: int) -> str:
    """``2 of 577 matches``: ``found`` rows came back for a query asking ``asked`` (one more than it counts)."""
    if found <= shown:
        return f"{shown} {noun}"
    if found < asked:
        return f"{shown} of {found:,} {noun}"
    return f"{shown} of more than {asked - 1:,} {noun}"


def emit_rows(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, output: Any = None, *, value: Any = None
) -> None:
    """Machine formats of a command's rows: json (``value`` when given), jsonl, csv, tsv, parquet."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = [{c: _parquet_value(r.get(c)) for c in columns} for r in rows]
        table = pa.Table.from_pylist(flat) if flat else pa.table({c: pa.array([], pa.string()) for c in columns})
        pq.write_table(table, str(output), compression="zstd")
        err_console.print(plain(f"wrote {len(rows)} rows to {output}"))
        return
    emit(rows, columns, fmt, output, value=value)


def _parquet_value(value: Any) -> Any:
    return jsontext.dumps(value, default=str) if isinstance(value, (dict, list, tuple)) else value
