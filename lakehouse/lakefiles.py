"""Which Parquet files make up the lake right now: a snapshot for readers.

When the lake has a manifest, the snapshot is its live entries (committed files, minus
files a compaction replaced), so a reader never sees a crashed job's leftovers or a file
twice. A lake without a manifest (written by another tool) is read with the plain
glob. Manifest entries are immutable, so :class:`SnapshotReader` keeps the ones it has
read and only lists the folder again on the next snapshot.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from magsag.backends import jsontext
from magsag.backends.errors import NotFoundError
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.objstore import Lake, retry

# Interactive reads retry a transient store error once (the writers' policy is longer):
# a dead endpoint is reported in seconds.
READ_RETRIES = 1


@dataclass(frozen=True)
class LakeFile:
    dataset: str
    day: date
    rel: str  # relative to the lake root
    uri: str  # what DuckDB / Polars open
    rows: int | None = None
    bytes: int | None = None
    min_ts: str | None = None
    max_ts: str | None = None


@dataclass(frozen=True)
class LakeSnapshot:
    """The live files of each dataset, oldest partition first."""

    lake: Lake
    files: dict[str, tuple[LakeFile, ...]] = field(default_factory=dict)
    from_manifest: bool = False

    def of(self, dataset: str, since: date | None = None, until: date | None = None) -> list[LakeFile]:
        """Files of ``dataset`` whose partition day is in ``[since, until]`` (both inclusive)."""
        return [
            f
            for f in self.files.get(dataset, ())
            if (since is None or f.day >= since) and (until is None or f.day <= until)
        ]

    def days(self, dataset: str) -> list[date]:
        return sorted({f.day for f in self.files.get(dataset, ())})

    @property
    def empty(self) -> bool:
        return not any(self.files.values())

    def key(self) -> tuple[Any, ...]:
        return tuple((d, tuple(f.rel for f in fs)) for d, fs in sorted(self.files.items()))


def _strip(lake: Lake, path: str) -> str:
    root = lake.root.rstrip("/")
    path = path.replace("\\", "/")
    if lake.is_local:
        root = root.replace("\\", "/")
    return path[len(root) + 1 :] if root and path.startswith(root + "/") else path.lstrip("/")


class SnapshotReader:
    """Takes snapshots of one lake, caching the (immutable) manifest entries it has read."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self._entries: dict[str, tuple[str, manifest.ManifestEntry]] = {}  # path -> (version, entry)
        self._lock = threading.Lock()
        self._disk_loaded = False

    def exists(self) -> bool:
        """Whether the lake root holds anything a reader could read (cheap: a stat or a list)."""
        fs, lake = self.lake.fs, self.lake
        if lake.is_local:
            return any(os.path.exists(lake.path(p)) for p in (layout.MANIFEST_DIR, *layout.DATASETS))

        def probe() -> bool:
            fs.invalidate_cache(lake.root)
            return any(fs.exists(lake.path(p)) for p in (layout.MANIFEST_DIR, *layout.DATASETS))

        try:
            return retry(lake, "looking for the lake", probe, retries=READ_RETRIES)
        except NotFoundError:
            return False

    def _list(self, rel_dir: str, suffix: str) -> list[str]:
        return sorted(self._list_detail(rel_dir, suffix))

    def _list_detail(self, rel_dir: str, suffix: str) -> dict[str, str]:
        """Paths under ``rel_dir`` ending in ``suffix`` -> a version tag (size + ETag or mtime)."""
        fs = self.lake.fs
        base = self.lake.path(rel_dir)

        def find() -> dict[str, Any]:
            if not self.lake.is_local:
                fs.invalidate_cache(base)
            return fs.find(base, detail=True)

        try:
            found = retry(self.lake, f"listing {rel_dir}", find, retries=READ_RETRIES)
        except NotFoundError:
            return {}
        return {p: _version(info) for p, info in found.items() if p.endswith(suffix)}

    def _manifest(self, datasets: Iterable[str]) -> dict[str, list[manifest.ManifestEntry]] | None:
        """Every dataset's entries from one listing of the manifest folder (None: no manifest)."""
        listed = self._list_detail(layout.MANIFEST_DIR, ".json")
        if not listed:
            return None
        paths = sorted(listed)
        with self._lock:
            if not self._disk_loaded:
                self._entries.update(_disk_cache_load(self.lake))
                self._disk_loaded = True
            # An entry is reused only while its object is the one read before (same version tag).
            missing = [p for p in paths if p not in self._entries or self._entries[p][0] != listed[p]]
        if missing:
            blobs = retry(
                self.lake, "reading the manifest", self.lake.fs.cat, missing, on_error="return", retries=READ_RETRIES
            )
            if not isinstance(blobs, dict):  # one path: fsspec returns the bytes themselves
                blobs = {missing[0]: blobs}
            with self._lock:
                for p in missing:
                    raw = blobs.get(p)
                    if raw is None or isinstance(raw, Exception):
                        continue  # removed between list and read (a compaction finishing)
                    entry = manifest.ManifestEntry.from_json(raw, manifest.entry_source(self.lake, p))
                    self._entries[p] = (listed[p], entry)
        with self._lock:
            current = set(paths)
            for p in [p for p in self._entries if p not in current]:
                del self._entries[p]
            if missing:
                _disk_cache_save(self.lake, self._entries)
            out: dict[str, list[manifest.ManifestEntry]] = {d: [] for d in datasets}
            for p in paths:
                cached = self._entries.get(p)
                if cached is not None and cached[1].dataset in out:
                    out[cached[1].dataset].append(cached[1])
            return out

    def snapshot(self, datasets: Iterable[str] = layout.DATASETS) -> LakeSnapshot:
        """The live files now (manifest if the lake has one, else the plain glob)."""
        lake = self.lake
        datasets = tuple(datasets)
        entries = self._manifest(datasets)
        if entries is not None:
            files = {
                d: tuple(
                    LakeFile(d, e.day, e.path, lake.uri(e.path), e.rows, e.bytes, e.min_ts, e.max_ts)
                    for e in sorted(manifest.live(v), key=lambda e: (e.dt, e.path))
                )
                for d, v in entries.items()
            }
            return LakeSnapshot(lake, files, from_manifest=True)
        files = {}
        for d in datasets:
            out = []
            for p in self._list(d, ".parquet"):
                rel = _strip(lake, p)
                try:
                    ds, day = layout.check_data_path(rel)
                except ValueError:
                    continue  # not a data file of the layout (a subfolder, a stray name)
                if ds == d:
                    out.append(LakeFile(d, day, rel, lake.uri(rel)))
            files[d] = tuple(sorted(out, key=lambda f: (f.day, f.rel)))
        return LakeSnapshot(lake, files, from_manifest=False)


# ------------------------------------------------- entries remembered between processes
#
# A remote lake's manifest is one small object per file; reading them all costs a
# request each. Entries never change once written, so the ones read before are kept in
# this user's private temporary folder (0700, see magsag.backends.duckdb_ext) and a new process only
# lists the folder and reads the entries it has not seen. Local lakes are read directly.


def _disk_cache_path(lake: Lake) -> Any:
    if lake.is_local:
        return None
    from magsag.backends.duckdb_ext import private_dir

    base = private_dir()
    if base is None:
        return None
    key = hashlib.sha256(f"{lake.protocol}://{lake.root}|{getattr(lake.s3, 'endpoint_url', '')}".encode()).hexdigest()
    return base / "manifest-cache" / f"{key[:32]}.json"


def _version(info: dict[str, Any]) -> str:
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
    return f"{info.get('size')}:{tag}"


def _disk_cache_load(lake: Lake) -> dict[str, tuple[str, manifest.ManifestEntry]]:
    path = _disk_cache_path(lake)
    if path is None:
        return {}
    try:
        raw = jsontext.loads(path.read_bytes())
        return {p: (v, manifest.ManifestEntry.from_json(jsontext.dumpb(e), p)) for p, (v, e) in raw.items()}
    except (OSError, ValueError, TypeError, KeyError, manifest.ManifestError):
        return {}


def _disk_cache_save(lake: Lake, entries: dict[str, tuple[str, manifest.ManifestEntry]]) -> None:
    path = _disk_cache_path(lake)
    if path is None:
        return
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        data = jsontext.dumpb({p: (v, jsontext.loads(e.to_json())) for p, (v, e) in entries.items()})
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass
