"""Query parameters of the HTTP API: one declaration serves parsing, errors and OpenAPI.

Each endpoint lists its :class:`Param`\\ s. :func:`parse` turns a request's query string
into Python values or raises :class:`BadRequest` (HTTP 400) naming the parameter:
unknown names, repeated names, text where a number belongs, dates that do not parse.
Limits above their maximum are capped (the response says which limit it used), never
refused. Values that parse but that the store refuses (a status that does not exist)
come back as the library's :class:`~magsag.backends.errors.ValidationError`, HTTP 422.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.datastructures import QueryParams

from magsag.backends.errors import StorageError

MAX_TEXT = 1000


class BadRequest(Exception):
    """A malformed request (HTTP 400); the message names the parameter."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "string", "integer", "boolean", "datetime"
    description: str
    default: Any = None
    maximum: int | None = None  # integers: larger values are capped to it
    required: bool = False

    def openapi(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string" if self.kind == "datetime" else self.kind}
        if self.kind == "datetime":
            schema["description"] = "ISO-8601 date/time (UTC unless an offset is given) or an age: 30m, 12h, 7d"
        if self.kind == "integer":
            schema["minimum"] = 0
            if self.maximum is not None:
                schema["maximum"] = self.maximum
        if self.default is not None:
            schema["default"] = self.default
        return {
            "name": self.name,
            "in": "query",
            "required": self.required,
            "description": self.description,
            "schema": schema,
        }


def _when(text: str, name: str) -> datetime:
    from magsag.cli.common import parse_when

    try:
        value = parse_when(text, name)
    except StorageError as exc:
        raise BadRequest(str(exc)) from None
    assert value is not None
    return value


def parse(query: QueryParams, specs: tuple[Param, ...]) -> dict[str, Any]:
    """The parameters of ``specs`` from ``query`` (see the module docstring)."""
    known = {p.name: p for p in specs}
    for name in query:
        if name not in known:
            raise BadRequest(f"unknown parameter {name!r} (this endpoint takes: {', '.join(known) or 'none'})")
        if len(query.getlist(name)) > 1:
            raise BadRequest(f"parameter {name!r} given more than once")
    out: dict[str, Any] = {}
    for p in specs:
        raw = query.get(p.name)
        if raw is None or raw == "":
            if p.required:
                raise BadRequest(f"parameter {p.name!r} is required")
            out[p.name] = p.default
            continue
        if len(raw) > MAX_TEXT:
            raise BadRequest(f"parameter {p.name!r} is longer than {MAX_TEXT} characters")
        if p.kind == "integer":
            if not raw.isdigit():
                raise BadRequest(f"parameter {p.name!r} must be a whole number >= 0, got {raw[:40]!r}")
            value = int(raw)
            out[p.name] = min(value, p.maximum) if p.maximum is not None else value
        elif p.kind == "boolean":
            if raw.lower() not in ("true", "false", "1", "0"):
                raise BadRequest(f"parameter {p.name!r} must be true or false, got {raw[:40]!r}")
            out[p.name] = raw.lower() in ("true", "1")
        elif p.kind == "datetime":
            out[p.name] = _when(raw, p.name)
        else:
            if "\x00" in raw:
                raise BadRequest(f"parameter {p.name!r} holds a NUL character")
            out[p.name] = raw
    return out
