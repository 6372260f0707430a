"""The one way a benchmark records its figures: ``bench/results/<name>.json``, and docs from them.

Every script under ``bench/`` ends with :func:`save`::

    from _report import save
    save("ingest-sqlite", figures)  # -> bench/results/ingest-sqlite.json

The file holds the command that ran (``sys.argv``), the commit (``git rev-parse HEAD``,
``-dirty`` when tracked files differ from it), the machine (CPUs, memory, Python,
platform), the load averages when the figures were taken (``os.getloadavg()``: 1, 5 and 15
minutes, so a reader sees how busy the shared machine was) and the figures themselves
(any JSON: rates, seconds, ratios, nested per side). ``--out`` of a script may send it
elsewhere (a scratch run that should not replace the recorded one).

Docs quote figures only inside generated blocks::

    <!-- bench:ingest-sqlite -->
    ... (written by `python3 bench/_report.py --docs`) ...
    <!-- /bench:ingest-sqlite -->

:func:`render` turns a result file into that block (what ran, where, how loaded, then one
table row per figure, labelled by :data:`LABELS` where a script names them), and
``tests/test_bench_results.py`` fails when a block differs from its file, so a figure in
the docs is always the one a script wrote.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
DOCS = ROOT / "docs"
REQUIRED = ("bench", "command", "commit", "machine", "load", "measured_at", "figures")
_BLOCK = re.compile(r"(<!-- bench:(?P<name>[a-z0-9_-]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)", re.S)

# Labels of figures in the docs' tables (dotted path in ``figures`` -> label); unlabelled
# numeric figures are shown by their path.
LABELS: dict[str, dict[str, str]] = {
    "ingest-sqlite": {
        "events": "events ingested",
        "ours_eps": "`append_events` (ours), events/s",
        "bare_eps": "bare `executemany`, events/s",
        "ratio": "ratio ours / bare",
        "single_append_1_task_eps": "`append_event`, 1 task: calls returned, events/s",
        "single_append_1_task_committed_eps": "`append_event`, 1 task: all committed, events/s",
        "single_append_16_tasks_eps": "`append_event`, 16 tasks: calls returned, events/s",
        "single_append_16_tasks_committed_eps": "`append_event`, 16 tasks: all committed, events/s",
        "single_bare_commit_per_event_eps": "bare: one commit per event, events/s",
    },
    "otlp": {
        "spans": "spans (made by the OTel SDK)",
        "batch": "spans per request",
        "append_events_per_s": "`append_events`, the same events in the same batches, events/s",
        "receiver_events_per_s": "receiver: the SDK exporter's request bodies → HTTP → store, events/s",
        "receiver_spans_per_s": "receiver, spans/s",
        "ratio": "ratio receiver / `append_events`",
        "sdk_exporter_events_per_s": "end to end through `OTLPSpanExporter.export`, events/s",
        "sdk_exporter_ratio": "ratio end to end / `append_events`",
    },
    "ingest-postgres": {
        "events": "events ingested",
        "ours_eps": "`append_events` (COPY, ours), events/s",
        "bare_eps": "bare `copy_records_to_table`, events/s",
        "ratio": "ratio ours / bare",
        "single_append_1_task_eps": "`append_event`, 1 task, events/s",
        "single_append_16_tasks_eps": "`append_event`, 16 tasks, events/s",
        "search_p50_ms": "`search_text` p50, ms",
        "search_p95_ms": "`search_text` p95, ms",
        "search_bare_p50_ms": "same SQL, bare asyncpg, p50, ms",
        "search_fresh_p50_ms": "`search_text` p50 right after the load (before VACUUM), ms",
        "search_since_3d_p50_ms": "`search_text` p50, `since` = last 3 days, ms",
        "search_median_matches": "median matches per search",
        "list_runs_p50_ms": "`list_runs` p50, ms",
        "list_runs_filtered_p50_ms": "`list_runs(agent_slug, status, since)` p50, ms",
        "list_runs_filtered_bare_p50_ms": "same SQL, bare asyncpg, p50, ms",
    },
}


def commit() -> str:
    """The commit the benchmark ran on, ``-dirty`` when tracked files differ from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def load() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}


def measured_at() -> str:
    from magsag.backends.schema import utc_now

    return utc_now().replace(microsecond=0).isoformat()


def result_doc(name: str, figures: Any, command: str | None = None) -> dict[str, Any]:
    return {
        "bench": name,
        "command": command or shlex.join(["python3", *_relative_argv()]),
        "commit": commit(),
        "machine": machine(),
        "load": load(),
        "measured_at": measured_at(),
        "figures": figures,
    }


def _relative_argv() -> list[str]:
    argv = list(sys.argv)
    if argv:
        with_root = Path(argv[0]).resolve()
        if with_root.is_relative_to(ROOT):
            argv[0] = with_root.relative_to(ROOT).as_posix()
    return argv


def save(name: str, figures: Any, *, command: str | None = None, out: str | Path | None = None) -> Path:
    """Write ``bench/results/<name>.json`` (or ``out``) and return its path."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = result_doc(name, figures, command)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    print(f"figures written to {path} (load {doc['load']['1m']}, commit {doc['commit'][:12]})", file=sys.stderr)
    return path


def read(name: str) -> dict[str, Any]:
    return orjson.loads((RESULTS / f"{name}.json").read_bytes())


def leaves(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted path, value)`` of every number in ``value``, in the file's order."""
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for key, sub in value.items():
            out.extend(leaves(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        out = []
        for i, sub in enumerate(value):
            label = sub.get("name") or sub.get("backend") if isinstance(sub, dict) else None
            key = f"{label}" if label else str(i)
            if isinstance(sub, dict) and "rate_eps" in sub:
                key = f"{key}@{sub['rate_eps']}"
            out.extend(leaves(sub, f"{prefix}[{key}]"))
        return out
    if isinstance(value, bool) or not isinstance(value, int | float):
        return []
    return [(prefix, value)]


def fmt(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"


def render(name: str, doc: dict[str, Any] | None = None) -> str:
    """The docs block of one result file (without its marker lines)."""
    doc = doc or read(name)
    m, ld = doc["machine"], doc["load"]
    labels = LABELS.get(name, {})
    lines = [
        f"`{doc['command']}` (bench/results/{name}.json): commit `{doc['commit'][:12]}`,"
        f" {m.get('cpus')} CPUs, load {ld['1m']} / {ld['5m']} / {ld['15m']} (1 / 5 / 15 min),"
        f" {doc['measured_at'][:10]}",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    for path, value in leaves(doc["figures"]):
        if labels and path not in labels:
            continue
        lines.append(f"| {labels.get(path, f'`{path}`')} | {fmt(value)} |")
    return "\n".join(lines) + "\n"


def blocks(text: str) -> list[tuple[str, str]]:
    """``(name, body)`` of every generated block in a doc."""
    return [(m.group("name"), m.group("body")) for m in _BLOCK.finditer(text)]


def refresh(text: str) -> str:
    """``text`` with every block rendered again from its result file."""
    return _BLOCK.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["--docs"]:
        print("usage: python3 bench/_report.py --docs   (rewrite the bench blocks of docs/*.md)", file=sys.stderr)
        return 2
    for doc in sorted(DOCS.glob("*.md")):
        text = doc.read_text()
        new = refresh(text)
        if new != text:
            doc.write_text(new)
            print(f"updated {doc.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
