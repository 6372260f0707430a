"""Which Parquet files make up the lake right now: a snapshot for readers.

When the lake has a manifest, the snapshot is its live entries (committed files, minus
files a compaction replaced), so a reader never sees a crashed job's leftovers or a file
twice. A lake without a manifest (written by another tool) is read with the plain
glob. Manifest entries are immutable, so :class:`SnapshotReader` keeps the ones it has
read and only lists the folder again on the next snapshot.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from backends.errors import NotFoundError
from lakehouse import layout, manifest
from lakehouse.objstore import Lake, retry

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
        self._entries: dict[str, manifest.ManifestEntry] = {}
        self._lock = threading.Lock()

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
        fs = self.lake.fs
        base = self.lake.path(rel_dir)

        def find() -> list[str]:
            if not self.lake.is_local:
                fs.invalidate_cache(base)
            return fs.find(base)

        try:
            found = retry(self.lake, f"listing {rel_dir}", find, retries=READ_RETRIES)
        except NotFoundError:
            return []
        return sorted(p for p in found if p.endswith(suffix))

    def _manifest(self, dataset: str) -> list[manifest.ManifestEntry] | None:
        paths = self._list(layout.manifest_dir(dataset), ".json")
        if not paths:
            return None
        with self._lock:
            missing = [p for p in paths if p not in self._entries]
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
                    self._entries[p] = manifest.ManifestEntry.from_json(raw)
        with self._lock:
            current = set(paths)
            for p in [p for p in self._entries if p not in current and _in(p, dataset)]:
                del self._entries[p]
            return [self._entries[p] for p in paths if p in self._entries]

    def snapshot(self, datasets: Iterable[str] = layout.DATASETS) -> LakeSnapshot:
        """The live files now (manifest if the lake has one, else the plain glob)."""
        lake = self.lake
        entries = {d: self._manifest(d) for d in datasets}
        if any(v is not None for v in entries.values()):
            files = {
                d: tuple(
                    LakeFile(d, e.day, e.path, lake.uri(e.path), e.rows, e.bytes, e.min_ts, e.max_ts)
                    for e in sorted(manifest.live(v or ()), key=lambda e: (e.dt, e.path))
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
                    ds, day = layout.parse_partition(rel)
                except ValueError:
                    continue
                if ds == d:
                    out.append(LakeFile(d, day, rel, lake.uri(rel)))
            files[d] = tuple(sorted(out, key=lambda f: (f.day, f.rel)))
        return LakeSnapshot(lake, files, from_manifest=False)


def _in(path: str, dataset: str) -> bool:
    return f"/manifest/{dataset}/" in path.replace("\\", "/")
