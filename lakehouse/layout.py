"""Where things live in the lake: one place that names every path.

A lake root (a local folder or ``s3://bucket/prefix``) holds::

    events/dt=YYYY-MM-DD/part-<job>-<nnnn>.parquet   events by the UTC day of ``ts``
    runs/dt=YYYY-MM-DD/part-<job>-<nnnn>.parquet     runs by the UTC day they started
    _magsag/manifest/<dataset>/dt=YYYY-MM-DD/<file stem>.json   one entry per committed file
    _magsag/staging/<job>/...                        files being written (never read)

Any engine reads the data with a plain glob (``events/*/*.parquet``) and Hive
partitioning; nothing under ``_magsag/`` matches that glob.
"""

from __future__ import annotations

import re
import secrets
from datetime import date, datetime

from magsag.backends.schema import utc_now

EVENTS = "events"
RUNS = "runs"
DATASETS = (EVENTS, RUNS)

META_DIR = "_magsag"
MANIFEST_DIR = f"{META_DIR}/manifest"
STAGING_DIR = f"{META_DIR}/staging"

_PARTITION_RE = re.compile(r"(?:^|/)(events|runs)/dt=([0-9]{4}-[0-9]{2}-[0-9]{2})(?:/|$)")
# A data file the manifest may name: exactly <dataset>/dt=YYYY-MM-DD/<name>.parquet, nothing more.
_DATA_FILE_RE = re.compile(
    r"(events|runs)/dt=([0-9]{4}-[0-9]{2}-[0-9]{2})/[A-Za-z0-9_][A-Za-z0-9_.=+-]{0,199}\.parquet"
)
_SHOWN = 120  # characters of a refused path quoted in a message
_JOB_RE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"unknown lake dataset {dataset!r} (expected one of {', '.join(DATASETS)})")
    return dataset


def partition_dir(dataset: str, day: date) -> str:
    """``events/dt=2026-11-01`` (relative to the lake root)."""
    return f"{check_dataset(dataset)}/dt={day.isoformat()}"


def data_file_name(job_id: str, seq: int = 0) -> str:
    """File name of the ``seq``-th file a job writes into one partition."""
    if not _JOB_RE.match(job_id):
        raise ValueError(f"invalid job id {job_id!r}")
    return f"part-{job_id}-{seq:04d}.parquet"


def new_job_id(prefix: str = "tier", now: datetime | None = None) -> str:
    """A new lake job id, ``tier-20261126T140553Z-3fa9c1``: sortable, unique, valid for
    :func:`data_file_name` and :func:`staging_dir`."""
    return f"{prefix}-{(now or utc_now()):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def data_path(dataset: str, day: date, job_id: str, seq: int = 0) -> str:
    """Relative path of a data file: ``events/dt=2026-11-01/part-<job>-0000.parquet``."""
    return f"{partition_dir(dataset, day)}/{data_file_name(job_id, seq)}"


def data_glob(dataset: str) -> str:
    """Relative glob matching every data file of a dataset (what plain engines read)."""
    return f"{check_dataset(dataset)}/dt=*/*.parquet"


def manifest_dir(dataset: str, day: date | None = None) -> str:
    base = f"{MANIFEST_DIR}/{check_dataset(dataset)}"
    return base if day is None else f"{base}/dt={day.isoformat()}"


def manifest_path(data_rel_path: str) -> str:
    """Manifest entry path of a data file (same partition, same stem, ``.json``)."""
    dataset, day = parse_partition(data_rel_path)
    stem = data_rel_path.rsplit("/", 1)[-1].removesuffix(".parquet")
    return f"{manifest_dir(dataset, day)}/{stem}.json"


def staging_dir(job_id: str) -> str:
    if not _JOB_RE.match(job_id):
        raise ValueError(f"invalid job id {job_id!r}")
    return f"{STAGING_DIR}/{job_id}"


def parse_partition(path: str) -> tuple[str, date]:
    """``(dataset, day)`` of a path containing ``<dataset>/dt=YYYY-MM-DD``."""
    m = _PARTITION_RE.search(path.replace("\\", "/"))
    if not m:
        raise ValueError(f"not a lake partition path: {path!r}")
    return m.group(1), date.fromisoformat(m.group(2))


def _shown(path: object) -> str:
    text = repr(path)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 4] + "...'"


def check_data_path(path: object) -> tuple[str, date]:
    """``(dataset, day)`` of a data file path read from a manifest, a listing or user input.

    Only ``events|runs/dt=YYYY-MM-DD/<name>.parquet`` relative to the lake root is a lake
    data file: no ``..``, no ``.``, no empty or absolute part, no backslash, no subfolder.
    Anything else raises ValueError (nothing is normalised into shape: a path that needs
    it did not come from this lake's writer).
    """
    if not isinstance(path, str) or not _DATA_FILE_RE.fullmatch(path):
        raise ValueError(f"path {_shown(path)} is not a lake data file (events|runs/dt=YYYY-MM-DD/<name>.parquet)")
    dataset, day = path.split("/", 2)[:2]
    try:
        return dataset, date.fromisoformat(day[3:])
    except ValueError:
        raise ValueError(f"path {_shown(path)} names no valid day") from None


def check_rel(rel: str) -> str:
    """``rel`` if it is a normalised path inside the lake root (what every delete checks).

    Relative, ``/``-separated, no empty, ``.`` or ``..`` part, no backslash or NUL.
    """
    parts = rel.split("/") if isinstance(rel, str) else [""]
    if any(p in ("", ".", "..") for p in parts) or "\\" in rel or "\0" in rel:
        raise ValueError(f"path {_shown(rel)} is not inside the lake root")
    return rel


def join(root: str, rel: str) -> str:
    """Join a root path (as an fsspec filesystem sees it) and a relative lake path."""
    root = root.rstrip("/")
    return f"{root}/{rel.lstrip('/')}" if root else rel
