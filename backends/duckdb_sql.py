"""SQL literals for DuckDB: strings, lists and scalars inlined safely into SQL text.

DuckDB's Python client imports pandas (over a second here) the first time a query is
given parameters; :func:`bind` inlines them instead, which keeps every query of this
package free of that cost.
"""

from __future__ import annotations

from typing import Any


def sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: list[str]) -> str:
    """A DuckDB list literal of strings."""
    return "[" + ", ".join(sql_string(v) for v in values) + "]"


def literal(value: Any) -> str:
    """A SQL literal of a str, int, float, bool or None."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(value) if value == value and value not in (float("inf"), float("-inf")) else f"'{value}'::DOUBLE"
    if isinstance(value, str):
        return sql_string(value)
    raise TypeError(f"cannot inline a {type(value).__name__} into SQL")


def bind(sql: str, params: list[Any]) -> str:
    """Replace the ``?`` placeholders of ``sql`` (outside string literals) with literals."""
    out, n = [], 0
    quoted = False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        if ch == "?" and not quoted:
            if n >= len(params):
                raise ValueError("more placeholders than parameters")
            out.append(literal(params[n]))
            n += 1
        else:
            out.append(ch)
    if n != len(params):
        raise ValueError("more parameters than placeholders")
    return "".join(out)
