"""The report of a legacy import: what was imported, what was already there, what was rejected."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from magsag.ingest.legacy_reader import Rejection


@dataclass
class ImportReport:
    """What an import did (or, in a dry run, would do)."""

    source: str | None
    costs: list[str]
    dry_run: bool
    strict: bool
    runs_found: int = 0
    runs_imported: int = 0
    runs_present: int = 0
    runs_skipped: int = 0
    cost_runs_created: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    events_by_type: Counter[str] = field(default_factory=Counter)
    events_present: int = 0
    events_written: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    seconds: float = 0.0
    aborted: str | None = None

    @property
    def events_new(self) -> int:
        return sum(self.events_by_type.values())

    @property
    def events_per_second(self) -> float:
        return self.events_new / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when nothing was rejected (the CLI exits 0 only then)."""
        return self.rejected == 0 and self.aborted is None

    @property
    def written(self) -> bool:
        return not self.dry_run and self.aborted is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "costs": self.costs,
            "dry_run": self.dry_run,
            "strict": self.strict,
            "written": self.written,
            "ok": self.ok,
            "aborted": self.aborted,
            "runs": {
                "found": self.runs_found,
                "imported": self.runs_imported,
                "already_present": self.runs_present,
                "skipped": self.runs_skipped,
                "created_from_costs": self.cost_runs_created,
            },
            "skipped": [{"run": run, "reason": reason} for run, reason in self.skipped],
            "events": {
                "new": self.events_new,
                "by_type": dict(sorted(self.events_by_type.items())),
                "already_present": self.events_present,
                "duplicates": self.duplicates,
                "written": self.events_written,
            },
            "rejected": self.rejected,
            "rejections": [str(r) for r in self.rejections],
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
        }
