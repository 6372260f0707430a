"""What ``magsag data sql`` accepts: one read-only SELECT over the views, nothing else.

The check uses DuckDB's own parser, not patterns over the text:

1. ``extract_statements``: exactly one statement, and it must be a SELECT (this refuses
   INSERT/UPDATE/DELETE/CREATE/DROP, COPY, ATTACH/DETACH, INSTALL/LOAD, SET/RESET,
   PRAGMA assignments, CALL, EXPORT, transactions ...).
2. ``json_serialize_sql``: the parsed tree of that SELECT is walked; every table
   function must be on a short list of harmless ones (so ``read_csv``, ``read_parquet``,
   ``glob``, ``query``, ``sqlite_scan``, ``postgres_query`` ... are refused), and every
   table must be a plain name (not a file path, not a table of the attached hot store).
   Statements that look like SELECT but cannot be serialized (``PRAGMA version``) are
   refused too.

Behind that, the connection itself (``connect(locked=True)``, :func:`lock_down` below) has
external access disabled outside the lake and its configuration locked, so even a query
that got past the checks could not read other files, load extensions or change settings.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson
from magsag.backends.duckdb_sql import sql_list, sql_string
from magsag.backends.errors import QueryError

if TYPE_CHECKING:
    import duckdb

ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "repeat",
        "json_each",
        "json_tree",
        "duckdb_columns",
        "duckdb_views",
        "duckdb_tables",
        "duckdb_schemas",
        "duckdb_types",
        "duckdb_functions",
        "duckdb_keywords",
        "pragma_table_info",
        "pragma_show",
        "pragma_version",
        "pg_timezone_names",
        "icu_calendar_names",
        "summary",
    }
)
_PIVOT = re.compile(r"\bPIVOT\b", re.IGNORECASE)
_EXPLAIN = re.compile(r"\s*EXPLAIN\s+(?:ANALYZE\s+)?", re.IGNORECASE)
ALLOWED_SCHEMAS = frozenset({"", "main", "information_schema", "pg_catalog"})
ALLOWED_CATALOGS = frozenset({"", "memory", "system", "temp"})


def _fail(message: str) -> QueryError:
    return QueryError(f"data sql: {message}")


def check_sql(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise :class:`QueryError` (one line) unless ``sql`` is one read-only SELECT."""
    import duckdb

    if not isinstance(sql, str) or not sql.strip():
        raise _fail("no SQL given")
    if "\x00" in sql:
        raise _fail("the SQL contains a NUL character")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"malformed SQL: {_first_line(exc)}") from None
    if not statements:
        raise _fail("no SQL statement given")
    if len(statements) > 1:
        if statements[0].type == duckdb.StatementType.CREATE and _PIVOT.search(sql):
            raise _fail(
                "PIVOT without an IN list makes DuckDB create a type first, which a read-only query "
                "cannot; name the values: PIVOT events ON tier IN ('hot', 'lake') USING count(*)"
            )
        raise _fail(f"one statement only, got {len(statements)} (remove the ';' between them)")
    kind = statements[0].type
    explain = _EXPLAIN.match(sql)
    if kind == duckdb.StatementType.EXPLAIN and explain:  # EXPLAIN [ANALYZE] of a query that passes
        check_sql(con, sql[explain.end() :])
        return
    if kind != duckdb.StatementType.SELECT:
        name = getattr(kind, "name", str(kind))
        raise _fail(f"only read-only SELECT queries are allowed, got {name}")
    raw = con.execute(f"SELECT json_serialize_sql({sql_string(sql)})").fetchone()[0]
    tree = orjson.loads(raw)
    if tree.get("error"):
        head = sql.strip().split(None, 1)[0].upper()
        raise _fail(f"{head} statements are not allowed; use SELECT over the views")
    _walk(tree.get("statements", []))


def _walk(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "TABLE_FUNCTION":
        fn = node.get("function") or {}
        name = str(fn.get("function_name", "")).lower()
        qualified = fn.get("schema") or fn.get("catalog")
        if qualified or name not in ALLOWED_TABLE_FUNCTIONS:
            raise _fail(
                f"table function {name}() is not allowed: query the views (events, runs, lake_events, ...) "
                "instead of reading files or other databases"
            )
    elif kind == "BASE_TABLE":
        table = str(node.get("table_name", ""))
        schema = str(node.get("schema_name", "")).lower()
        catalog = str(node.get("catalog_name", "")).lower()
        if any(ch in table for ch in "/\\:.") or "*" in table:
            raise _fail(f"reading files ({table!r}) is not allowed: query the views instead")
        if schema not in ALLOWED_SCHEMAS or catalog not in ALLOWED_CATALOGS:
            shown = ".".join(p for p in (catalog, schema, table) if p)
            raise _fail(f"{shown} is not one of the views: use events, runs, lake_events, hot_events, ...")
    for value in node.values():
        if isinstance(value, (dict, list)):
            _walk(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def lock_down(con: duckdb.DuckDBPyConnection, allowed_dirs: list[str], allowed_paths: tuple[str, ...] = ()) -> None:
    """No file or network access beyond ``allowed_dirs``; no later configuration change."""
    dirs = [d if d.endswith("/") else d + "/" for d in allowed_dirs]
    if dirs:
        con.execute(f"SET allowed_directories = {sql_list(dirs)}")
    if allowed_paths:
        con.execute(f"SET allowed_paths = {sql_list(list(allowed_paths))}")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


class LockedConnection:
    """A DuckDB connection on which every statement passes :func:`check_sql` first.

    What ``magsag.lakehouse.connect(locked=True)`` returns: ``execute`` (and ``sql`` /
    ``query``, which run the statement the same way and return this object) check the
    statement, then run it; results are read with the usual ``fetch*`` / Arrow / pandas
    methods. Nothing else of DuckDB's connection (``read_parquet``, ``register``,
    ``install_extension``, relations that run SQL of their own ...) is offered, so the
    lockdown holds without the caller's help, also for what DuckDB's own settings do not
    stop (the SQLite scanner's ``ATTACH``/``sqlite_scan``).
    """

    _RESULTS = frozenset(
        {
            "fetchone",
            "fetchall",
            "fetchmany",
            "fetchdf",
            "fetch_df",
            "fetchnumpy",
            "df",
            "pl",
            "arrow",
            "fetch_arrow_table",
            "to_arrow_table",
            "to_arrow_reader",
            "fetch_record_batch",
            "description",
            "rowcount",
            "interrupt",
            "close",
        }
    )

    def __init__(self, raw: duckdb.DuckDBPyConnection):
        object.__setattr__(self, "_raw", raw)

    def execute(self, query: str, parameters: Any = None) -> LockedConnection:
        check_sql(self._raw, query)
        if parameters is None:
            self._raw.execute(query)
        else:
            self._raw.execute(query, parameters)
        return self

    sql = query = execute

    def cursor(self) -> LockedConnection:
        return LockedConnection(self._raw.cursor())

    def __getattr__(self, name: str) -> Any:
        if name in LockedConnection._RESULTS:
            return getattr(object.__getattribute__(self, "_raw"), name)
        raise AttributeError(f"{name} is not offered by a locked connection (execute a SELECT, then fetch)")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a locked connection cannot be changed")

    def __enter__(self) -> LockedConnection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._raw.close()


def raw_of(con: Any) -> Any:
    """The DuckDB connection itself behind ``con`` (for this package's own view upkeep)."""
    return object.__getattribute__(con, "_raw") if isinstance(con, LockedConnection) else con
