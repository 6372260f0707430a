"""The lake manifest: one small immutable JSON entry per committed data file.

Entry ``_magsag/manifest/<dataset>/dt=YYYY-MM-DD/<file stem>.json`` records the file's
partition, rows, bytes, min/max ``ts`` (or ``started_at`` for runs), sha256 checksum,
schema version and the job that wrote it. Writing the entry is the commit point of a file:
a data file without an entry is not committed (a crashed job's leftover, which the next
run finishes or removes).

Compaction writes a merged file whose entry lists the files it ``replaces``; a file named
by any entry's ``replaces`` is no longer live (its own entry and bytes are removed right
after). :func:`live_entries` is therefore a consistent snapshot of the lake for readers
that go through the manifest; plain-glob readers need nothing but the data files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import cache
from typing import Any

import pydantic
from magsag.backends import jsontext
from magsag.backends.errors import IntegrityError
from magsag.backends.schema import SCHEMA_VERSION, utc_now
from magsag.lakehouse import layout
from magsag.lakehouse.objstore import Lake

MANIFEST_FORMAT = 1
_CHECKSUM = re.compile(r"sha256:[0-9a-f]{64}")


class ManifestError(IntegrityError):
    """A manifest entry this lake's writer cannot have written; names the entry's file."""


@dataclass(frozen=True)
class ManifestEntry:
    dataset: str
    dt: str  # YYYY-MM-DD
    path: str  # data file, relative to the lake root
    rows: int
    bytes: int
    min_ts: str | None  # ISO-8601 UTC
    max_ts: str | None
    checksum: str  # "sha256:<hex>" of the file's bytes
    job_id: str
    committed_at: str
    schema_version: int = SCHEMA_VERSION
    replaces: tuple[str, ...] = field(default_factory=tuple)
    format: int = MANIFEST_FORMAT

    @property
    def day(self) -> date:
        return date.fromisoformat(self.dt)

    def to_json(self) -> bytes:
        d = asdict(self)
        d["replaces"] = list(self.replaces)
        return jsontext.dumpb(d, sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str, source: str = "") -> ManifestEntry:
        """Parse and check one entry; ``source`` (the entry's file) is named in errors.

        Raises :class:`ManifestError` for an entry whose paths leave the lake's layout.
        """
        where = f"manifest entry {source}" if source else "manifest entry"
        try:
            entry = _adapter().validate_json(raw, strict=True)
        except pydantic.ValidationError as exc:
            raise ManifestError(f"{where}: {_first_problem(exc)}; {REFUSED}") from None
        check_entry(entry, source)
        return entry


REFUSED = "refused, nothing changed (remove or fix that file)"


@cache
def _adapter() -> pydantic.TypeAdapter[ManifestEntry]:
    """The one schema of an entry: the dataclass's fields and types, strictly (JSON in)."""
    return pydantic.TypeAdapter(ManifestEntry)


def _first_problem(exc: pydantic.ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    if err.get("type") == "json_invalid":
        return "not valid JSON"
    if err.get("type") in ("dataclass_type", "dataclass_exact_type", "model_type") and not loc:
        return "not a JSON object"
    return f"{loc}: {err['msg'].lower()}" if loc else err["msg"].lower()


def check_entry(entry: ManifestEntry, source: str = "") -> None:
    """Refuse an entry whose paths could reach outside its partition.

    Its ``path`` and every ``replaces`` path must be data files of the layout
    (:func:`~magsag.lakehouse.layout.check_data_path`) in the entry's own partition, and
    the entry must sit at its own file's manifest path: compaction deletes exactly
    what an entry replaces, so nothing else may ever be named there.
    """
    where = f"manifest entry {source}" if source else "manifest entry"
    try:
        layout.check_dataset(entry.dataset)
        if not (0 <= entry.rows < 2**63 and 0 <= entry.bytes < 2**63):
            raise ValueError(f"rows and bytes must be counts (0 .. 2**63-1), got {entry.rows} and {entry.bytes}")
        if not _CHECKSUM.fullmatch(entry.checksum):
            raise ValueError("checksum is not sha256:<64 hex digits>")
        dataset, day = layout.check_data_path(entry.path)
        if (dataset, day.isoformat()) != (entry.dataset, entry.dt):
            raise ValueError(f"path {entry.path!r} is not in partition {entry.dataset}/dt={entry.dt}")
        for old in entry.replaces:
            if layout.check_data_path(old) != (dataset, day):
                raise ValueError(f"replaces {old!r}, a file of another partition")
        if source and not source.endswith("/" + layout.manifest_path(entry.path)):
            raise ValueError(f"it names {entry.path!r}, whose entry is {layout.manifest_path(entry.path)}")
    except ValueError as exc:
        raise ManifestError(f"{where}: {exc}; {REFUSED}") from None


def checksum_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def checksum_file(lake: Lake, rel: str, chunk: int = 8 << 20) -> str:
    """sha256 of a lake file, read back from the store in chunks."""
    h = hashlib.sha256()
    with lake.fs.open(lake.path(rel), "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return "sha256:" + h.hexdigest()


def now_iso() -> str:
    return utc_now().isoformat(timespec="microseconds").replace("+00:00", "Z")


def write_entry(lake: Lake, entry: ManifestEntry) -> str:
    """Write (commit) an entry; return its path. Atomic: a reader sees all or nothing.

    Local folders write a temporary name and rename it; object stores make a PUT
    visible all at once.
    """
    rel = layout.manifest_path(entry.path)
    target = lake.path(rel)
    parent = target.rsplit("/", 1)[0]
    lake.fs.makedirs(parent, exist_ok=True)
    data = entry.to_json()
    if lake.is_local:
        tmp = f"{target}.tmp"
        with lake.fs.open(tmp, "wb") as f:
            f.write(data)
        lake.fs.mv(tmp, target)
    else:
        lake.fs.pipe_file(target, data)
    return rel


def _manifest_files(lake: Lake, dataset: str, day: date | None) -> list[str]:
    base = lake.path(layout.manifest_dir(dataset, day))
    try:
        found = lake.fs.find(base)
    except FileNotFoundError:
        return []
    return sorted(p for p in found if p.endswith(".json"))


def read_entries(lake: Lake, dataset: str, day: date | None = None) -> list[ManifestEntry]:
    """Every entry of a dataset (or one partition), replaced ones included."""
    paths = _manifest_files(lake, dataset, day)
    if not paths:
        return []
    blobs = lake.fs.cat(paths) if len(paths) > 1 else {paths[0]: lake.fs.cat_file(paths[0])}
    out: list[ManifestEntry] = []
    for p in paths:
        raw = blobs.get(p)
        if isinstance(raw, Exception) or raw is None:
            continue  # deleted between list and read (a compaction finishing)
        out.append(ManifestEntry.from_json(raw, entry_source(lake, p)))
    return out


def entry_source(lake: Lake, path: str) -> str:
    """How a message names the entry file at ``path`` (as ``lake.fs`` names it)."""
    return path if lake.is_local else f"{lake.protocol}://{path}"


def live(entries: Iterable[ManifestEntry]) -> list[ManifestEntry]:
    """Entries whose file is not replaced by another entry, sorted by path."""
    entries = list(entries)
    gone = {p for e in entries for p in e.replaces}
    return sorted((e for e in entries if e.path not in gone), key=lambda e: e.path)


def live_entries(lake: Lake, dataset: str, day: date | None = None) -> list[ManifestEntry]:
    return live(read_entries(lake, dataset, day))


def partitions(lake: Lake, dataset: str) -> dict[date, list[ManifestEntry]]:
    """Live entries grouped by partition day, oldest day first."""
    out: dict[date, list[ManifestEntry]] = {}
    for e in live_entries(lake, dataset):
        out.setdefault(e.day, []).append(e)
    return dict(sorted(out.items()))


def fingerprint(entries: Iterable[ManifestEntry]) -> str:
    """A partition's identity: changes whenever a file is added, replaced or removed."""
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.path):
        h.update(f"{e.path}\0{e.checksum}\0{e.rows}\n".encode())
    return h.hexdigest()[:32]


def entry_summary(entries: Iterable[ManifestEntry]) -> dict[str, Any]:
    entries = list(entries)
    return {
        "files": len(entries),
        "rows": sum(e.rows for e in entries),
        "bytes": sum(e.bytes for e in entries),
        "min_ts": min((e.min_ts for e in entries if e.min_ts), default=None),
        "max_ts": max((e.max_ts for e in entries if e.max_ts), default=None),
    }
