"""Full-text search over lake Parquet files, as close to the hot stores' FTS as possible.

Hot stores index ``msg`` (SQLite FTS5 ``unicode61 remove_diacritics 2``; PostgreSQL a
``simple`` tsvector over letter/digit runs). The lake has no index; a search scans the
``msg`` column of the partitions its time filter leaves (``since``/``until`` prune whole
days) and matches the same way:

* a *token* is a run of letters and digits (``mcp.call`` is ``mcp`` + ``call``,
  ``ERROR_x`` is ``error`` + ``x``), compared case-folded and without accents (as
  SQLite does; PostgreSQL keeps accents);
* default mode: every word of the query must appear as a token (words only, so no input
  can be a syntax error);
* ``raw=True``: a small boolean language shared by both hot dialects — ``AND`` (or
  ``&``, or nothing), ``OR`` (or ``|``), ``NOT`` (or ``!``/``-`` before a term),
  parentheses, ``"phrases"`` (adjacent tokens), prefixes ``term*`` (or ``term:*``).
  ``NEAR`` and column filters are not supported on the lake (QueryError).

Ranking: BM25 over the matched rows (term frequency and message length, ``k1=1.2``,
``b=0.75``, idf left out: every hit holds every required term). Hot hits are scored by
the same function (:func:`score`) when results of both tiers are merged, so one order
holds across tiers.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from magsag.backends.errors import QueryError

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
K1, B, AVGDL = 1.2, 0.75, 10.0
TOKENS_SQL = r"list_filter(string_split_regex(lower(strip_accents(msg)), '[^\p{L}\p{N}]+'), x -> x <> '')"


def fold(text: str) -> str:
    """Lower case, accents removed (what SQLite's ``remove_diacritics 2`` does)."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if unicodedata.category(c) != "Mn"))


def tokens(text: str | None) -> list[str]:
    return _TOKEN.findall(fold(text or ""))


def words(query: str) -> list[str]:
    """The words of a plain query (the tokens, deduplicated, in order)."""
    return list(dict.fromkeys(tokens(query)))


def score(msg: str | None, terms: list[str]) -> float:
    """BM25 (no idf) of ``msg`` for ``terms``: what lake hits are ranked by."""
    toks = tokens(msg)
    if not toks or not terms:
        return 0.0
    norm = K1 * (1 - B + B * len(toks) / AVGDL)
    total = 0.0
    for t in terms:
        if t.endswith("*"):
            stem = t[:-1]
            tf = sum(1 for x in toks if x.startswith(stem))
        else:
            tf = toks.count(t)
        total += tf * (K1 + 1) / (tf + norm) if tf else 0.0
    return total


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ------------------------------------------------------------------ raw queries


@dataclass
class Node:
    op: str  # "term", "prefix", "phrase", "and", "or", "not"
    value: str | list[str] | None = None
    kids: tuple[Node, ...] = ()


_RAW_TOKEN = re.compile(r'\s*(\(|\)|"[^"]*"?|&|\||!|-(?=\S)|[^\s()"&|!]+)')


class _Parser:
    def __init__(self, query: str):
        self.query = query
        self.items: list[str] = []
        pos = 0
        text = query.strip()
        while pos < len(text):
            m = _RAW_TOKEN.match(text, pos)
            if not m or not m.group(1):
                raise self.error("cannot read it")
            self.items.append(m.group(1))
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.i = 0

    def error(self, why: str) -> QueryError:
        return QueryError(
            f"malformed full-text query {self.query!r}: {why}; search without --raw to match the words as typed"
        )

    def peek(self) -> str | None:
        return self.items[self.i] if self.i < len(self.items) else None

    def take(self) -> str:
        item = self.items[self.i]
        self.i += 1
        return item

    def parse(self) -> Node:
        if not self.items:
            raise self.error("it is empty")
        node = self.expr_or()
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek()!r}")
        return node

    def expr_or(self) -> Node:
        kids = [self.expr_and()]
        while self.peek() in ("OR", "|"):
            self.take()
            kids.append(self.expr_and())
        return kids[0] if len(kids) == 1 else Node("or", kids=tuple(kids))

    def expr_and(self) -> Node:
        kids = [self.unary()]
        while True:
            nxt = self.peek()
            if nxt is None or nxt in ("OR", "|", ")"):
                break
            if nxt in ("AND", "&"):
                self.take()
                kids.append(self.unary())
            elif nxt == "NOT":  # FTS5: a NOT b
                self.take()
                kids.append(Node("not", kids=(self.unary(),)))
            else:
                kids.append(self.unary())
        return kids[0] if len(kids) == 1 else Node("and", kids=tuple(kids))

    def unary(self) -> Node:
        item = self.peek()
        if item is None:
            raise self.error("it ends too early")
        if item in ("!", "-", "NOT"):
            self.take()
            return Node("not", kids=(self.unary(),))
        if item == "(":
            self.take()
            node = self.expr_or()
            if self.peek() != ")":
                raise self.error("a '(' is not closed")
            self.take()
            return node
        if item in (")", "AND", "OR", "&", "|"):
            raise self.error(f"unexpected {item!r}")
        self.take()
        if item.startswith('"'):
            if len(item) < 2 or not item.endswith('"'):
                raise self.error("a '\"' is not closed")
            toks = tokens(item[1:-1])
            if not toks:
                raise self.error("an empty phrase")
            return Node("phrase", toks) if len(toks) > 1 else Node("term", toks[0])
        if item.upper() == "NEAR" or item.upper().startswith("NEAR("):
            raise self.error("NEAR is not supported on the lake")
        if ":" in item and not item.endswith(":*"):
            raise self.error(f"column filters ({item!r}) are not supported")
        prefix = item.endswith("*") or item.endswith(":*")
        toks = tokens(item.removesuffix(":*").rstrip("*"))
        if not toks:
            raise self.error(f"{item!r} holds no word")
        if len(toks) > 1:
            node = Node("phrase", toks)
            return node if not prefix else Node("and", kids=(node, Node("prefix", toks[-1])))
        return Node("prefix" if prefix else "term", toks[0])


def parse_raw(query: str) -> Node:
    return _Parser(query).parse()


def node_sql(node: Node) -> str:
    """SQL over ``toks`` (token list) and ``norm`` (' tok tok ... ') for a parsed query."""
    if node.op == "term":
        return f"list_contains(toks, {_lit(str(node.value))})"
    if node.op == "prefix":
        return f"contains(norm, {_lit(' ' + str(node.value))})"
    if node.op == "phrase":
        return f"contains(norm, {_lit(' ' + ' '.join(node.value or []) + ' ')})"  # type: ignore[arg-type]
    if node.op == "not":
        return f"NOT ({node_sql(node.kids[0])})"
    joiner = " AND " if node.op == "and" else " OR "
    return "(" + joiner.join(node_sql(k) for k in node.kids) + ")"


def positive_terms(node: Node) -> list[str]:
    """Terms that raise a hit's score (prefixes end with '*')."""
    if node.op == "term":
        return [str(node.value)]
    if node.op == "prefix":
        return [f"{node.value}*"]
    if node.op == "phrase":
        return list(node.value or [])  # type: ignore[arg-type]
    if node.op == "not":
        return []
    return list(dict.fromkeys(t for k in node.kids for t in positive_terms(k)))


def prefilter_words(node: Node) -> list[str]:
    """Words every hit must contain (for a cheap substring pre-filter before tokenizing)."""
    if node.op in ("term", "prefix"):
        return [str(node.value)]
    if node.op == "phrase":
        return list(node.value or [])  # type: ignore[arg-type]
    if node.op == "and":
        return [w for k in node.kids for w in prefilter_words(k)]
    return []


@dataclass(frozen=True)
class LakeQuery:
    """A search compiled for the lake: the match condition and the scoring terms."""

    condition: str  # over toks / norm
    terms: list[str]
    prefilter: list[str]


def compile_query(query: str, raw: bool) -> LakeQuery | None:
    """None when the query holds no word (no hits, like the hot stores)."""
    if not isinstance(query, str):
        raise QueryError("the search query must be text")
    if raw:
        if "\x00" in query:
            raise QueryError("malformed full-text query: it contains a NUL character")
        if not query.strip():
            return None
        node = parse_raw(query)
        return LakeQuery(node_sql(node), positive_terms(node), prefilter_words(node))
    ws = words(query)
    if not ws:
        return None
    cond = " AND ".join(f"list_contains(toks, {_lit(w)})" for w in ws)
    return LakeQuery(cond, ws, ws)


def search_sql(q: LakeQuery, source: str, filters: list[str], select: str) -> str:
    """A search over ``source`` (a FROM item): the hits, best first, ``LIMIT ?`` last."""
    pre = " AND ".join(
        [*(f"contains(lower(strip_accents(msg)), {_lit(w)})" for w in q.prefilter), *filters] or ["true"]
    )
    terms = []
    for t in q.terms:
        if t.endswith("*"):
            terms.append(f"len(list_filter(toks, x -> starts_with(x, {_lit(t[:-1])})))")
        else:
            terms.append(f"len(list_filter(toks, x -> x = {_lit(t)}))")
    norm = f"{K1} * (1 - {B} + {B} * len(toks) / {AVGDL})"
    bm25 = " + ".join(f"({tf}) * {K1 + 1} / (({tf}) + {norm})" for tf in terms) or "0.0"
    return (
        f"WITH pre AS (SELECT *, {TOKENS_SQL} AS toks FROM {source} WHERE msg IS NOT NULL AND {pre}), "
        "tok AS (SELECT *, ' ' || array_to_string(toks, ' ') || ' ' AS norm FROM pre) "
        f"SELECT {select}, ({bm25}) AS score FROM tok WHERE {q.condition} "
        "ORDER BY score DESC, ts DESC LIMIT ?"
    )
