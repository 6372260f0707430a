"""What a tiering job reports: per-day results, totals, and the progress hooks it calls.

The job (``lakehouse/tiering/job.py``) fills a :class:`TierReport`; the CLI prints it as a
table or ``--json``. Progress goes through :class:`TierProgress`, a tiny interface the CLI
implements with Rich bars (days, rows, bytes) and library callers may ignore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from magsag.backends.tiering.protocol import TierDay


class TierProgress:
    """Progress hooks of a tiering job; every method is a no-op here."""

    def waiting(self, message: str) -> None:
        """The job is queued behind another one's lock (said once)."""

    def plan(self, days: int, rows: int, hot_bytes: int) -> None:
        """The work ahead: ``days`` claims, about ``rows`` events, ``hot_bytes`` in the hot store."""

    def day(self, day: date, step: str) -> None:
        """Day ``day`` entered ``step`` (claim, export, publish, delete, done, recover)."""

    def rows(self, n: int) -> None:
        """``n`` more events exported."""

    def bytes(self, n: int) -> None:
        """``n`` more bytes committed to the lake."""

    def day_done(self, day: date) -> None:
        """One more day committed to the destination (or found with nothing to claim); its hot
        rows are deleted when the job settles all its claims at the end."""


@dataclass
class DayResult:
    """What one claim (one day, one destination) did."""

    day: date
    batch_id: str
    mode: str
    events: int = 0  # rows written to the lake
    runs: int = 0
    event_bytes: int = 0
    run_bytes: int = 0
    hot_bytes: int = 0  # estimate of what the rows took in the hot store
    duplicates: int = 0  # selected rows already in the destination (not written again)
    deleted_events: int = 0
    deleted_runs: int = 0
    files: list[str] = field(default_factory=list)
    recovered: bool = False  # finished on behalf of an earlier, interrupted job
    seconds: float = 0.0

    @property
    def bytes(self) -> int:
        return self.event_bytes + self.run_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "batch_id": self.batch_id,
            "mode": self.mode,
            "events": self.events,
            "runs": self.runs,
            "bytes": self.bytes,
            "hot_bytes": self.hot_bytes,
            "duplicates": self.duplicates,
            "deleted_events": self.deleted_events,
            "deleted_runs": self.deleted_runs,
            "files": list(self.files),
            "recovered": self.recovered,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class TierReport:
    """The outcome of one tiering job (or, with ``dry_run``, its plan)."""

    mode: str
    dest: str
    cutoff: str
    job_id: str
    dry_run: bool = False
    planned: list[TierDay] = field(default_factory=list)
    days: list[DayResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # day -> why it was not claimed
    unfinished: int = 0  # dry run: interrupted claims the next run will finish
    orphan_runs: list[str] = field(default_factory=list)
    stopped: bool = False  # asked to stop (SIGTERM/SIGINT) before the plan was done
    seconds: float = 0.0

    @property
    def events(self) -> int:
        return sum(d.events for d in self.days)

    @property
    def runs(self) -> int:
        return sum(d.runs for d in self.days)

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.days)

    @property
    def hot_bytes(self) -> int:
        return sum(d.hot_bytes for d in self.days)

    @property
    def ratio(self) -> float | None:
        """Lake bytes per hot-store byte of the same rows (smaller is better)."""
        return round(self.bytes / self.hot_bytes, 4) if self.hot_bytes else None

    @property
    def held_events(self) -> int:
        return sum(d.held_events for d in self.planned)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "dest": self.dest,
            "cutoff": self.cutoff,
            "job_id": self.job_id,
            "dry_run": self.dry_run,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
        }
        if self.dry_run:
            movable = [d for d in self.planned if d.movable]
            out.update(
                days=len(movable),
                events=sum(d.events for d in movable),
                runs=sum(d.runs for d in movable),
                hot_bytes=sum(d.hot_bytes for d in movable),
                held_events=self.held_events,
                unfinished_claims=self.unfinished,
                orphan_runs=self.orphan_runs,
                plan=[d.as_dict() for d in self.planned],
            )
        else:
            out.update(
                days=len(self.days),
                events=self.events,
                runs=self.runs,
                bytes=self.bytes,
                hot_bytes=self.hot_bytes,
                ratio=self.ratio,
                recovered=sum(1 for d in self.days if d.recovered),
                deleted_events=sum(d.deleted_events for d in self.days),
                held_events=self.held_events,
                orphan_runs=self.orphan_runs,
                rows_per_s=round(self.events / self.seconds) if self.seconds > 0 else None,
                results=[d.as_dict() for d in self.days],
            )
        if self.skipped:
            out["skipped"] = dict(self.skipped)
        return out
