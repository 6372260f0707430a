"""``export_otel`` over every kind of store (hot and half in the lake): store A -> OTLP ->
the receiver's store B holds the same runs and tool calls; the watermark of the continuous
mode; stopping between batches; a refusing or unreachable endpoint."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from magsag.backends.errors import BackendUnavailable

from magsag.ingest.demo import load_demo
from magsag.otel import watermark
from magsag.otel.export import ExportProgress, export_otel
from magsag.otel.select import Selection
from magsag.otel.transport import EndpointRefused, signal_url
from magsag.storage import open_storage
from tests.conftest import BackendCase
from tests.otel.conftest import Receiver, free_port

END = datetime(2026, 3, 1, tzinfo=UTC)


async def _finished(storage: Any) -> dict[str, dict[str, Any]]:
    return {r["run_id"]: r for r in await storage.list_runs(limit=100_000) if r["status"] != "running"}


async def test_store_to_otlp_to_store_across_tiers(backend_case: BackendCase, fresh_receiver: Receiver) -> None:
    store = backend_case.backend
    await load_demo(store, days=2, runs_per_day=5, end=END)
    await store.create_run("still-going", "slow-agent", started_at=END, status="running")
    runs = await _finished(store)
    running = await store.list_runs(status="running", limit=1000)
    rep = await export_otel(store, fresh_receiver.url, batch_runs=9)
    assert rep.runs == len(runs) and rep.waiting_running == len(running)
    async with open_storage(db_path=fresh_receiver.db, lake_url=str(fresh_receiver.lake)) as peer:
        got = await _finished(peer)
        assert set(got) == set(runs)
        for rid, r in runs.items():
            g = got[rid]
            assert (g["agent_slug"], g["parent_run_id"], g["status"]) == (
                r["agent_slug"],
                r["parent_run_id"],
                r["status"],
            )
            assert (g["started_at"], g["ended_at"]) == (r["started_at"], r["ended_at"])
            want = sorted(
                [
                    (e["ts"], e["payload"]["tool"], e["payload"]["server_id"], e["payload"]["status"], e["level"])
                    async for e in store.get_events(rid, event_type="mcp.call")
                ]
            )
            have = sorted(
                [
                    (e["ts"], e["payload"]["tool"], e["payload"]["server_id"], e["payload"]["status"], e["level"])
                    async for e in peer.get_events(rid, event_type="mcp.call")
                ]
            )
            assert have == want, rid


async def test_continuous_mode_watermark(backend_case: BackendCase, fresh_receiver: Receiver) -> None:
    store = backend_case.backend
    await load_demo(store, days=1, runs_per_day=4, end=END)
    runs = await _finished(store)
    first = await export_otel(store, fresh_receiver.url, continuous=True, batch_runs=5)
    assert first.runs == len(runs) and first.watermark is not None
    again = await export_otel(store, fresh_receiver.url, continuous=True)
    assert again.runs == 0 and again.watermark == first.watermark  # each finished run once
    # A run still running waits; once it ends it goes out, once.
    await store.create_run("late-1", "late-agent", started_at=END, status="running")
    await store.append_event("late-1", "late-agent", "log", END, message="working")
    waiting = await export_otel(store, fresh_receiver.url, continuous=True)
    assert waiting.runs == 0 and waiting.waiting_running >= 1
    await store.update_run("late-1", status="succeeded", ended_at=datetime(2026, 3, 2, tzinfo=UTC))
    later = await export_otel(store, fresh_receiver.url, continuous=True)
    assert later.runs == 1 and later.watermark["run_id"] == "late-1"
    # Another destination (project) has its own watermark.
    other = await export_otel(store, fresh_receiver.url, continuous=True, project="other")
    assert other.runs == len(runs) + 1


async def test_stop_between_batches_keeps_the_watermark_of_what_was_sent(
    backend_case: BackendCase, fresh_receiver: Receiver
) -> None:
    store = backend_case.backend
    await load_demo(store, days=1, runs_per_day=6, end=END)
    total = len(await _finished(store))
    stop = threading.Event()

    class StopAfterTwo(ExportProgress):
        n = 0

        def batch(self, runs: int, spans: int, sent_bytes: int) -> None:
            self.n += 1
            if self.n == 2:
                stop.set()  # what SIGTERM does in the CLI

    rep = await export_otel(
        store, fresh_receiver.url, continuous=True, batch_runs=3, stop=stop, progress=StopAfterTwo()
    )
    assert rep.stopped and rep.batches == 2 and rep.runs == 6
    dest = watermark.destination_key(signal_url(fresh_receiver.url), "magsag")
    key, done = await watermark.read(store, dest)
    assert done == 6 and key[1] == rep.watermark["run_id"]
    rest = await export_otel(store, fresh_receiver.url, continuous=True, batch_runs=100)
    assert rest.runs == total - 6


async def test_unreachable_or_refusing_endpoint_leaves_the_watermark(tmp_path: Any) -> None:
    from tests.otel.conftest import start_receiver, stop

    async with open_storage(db_path=tmp_path / "a.db", lake_url=str(tmp_path / "lake")) as store:
        await load_demo(store, days=1, runs_per_day=2, end=END)
        closed = f"http://127.0.0.1:{free_port()}"
        with pytest.raises(BackendUnavailable, match=r"connection refused \(after 2 attempts\)"):
            await export_otel(store, closed, continuous=True, retries=1, backoff=0.01)
        assert await watermark.read(store, watermark.destination_key(signal_url(closed), "magsag")) == (
            watermark.START,
            0,
        )
        (tmp_path / "peer").mkdir()
        rec, (proc, out) = start_receiver(tmp_path / "peer", token="s3cret-token")
        try:
            with pytest.raises(EndpointRefused, match="answered HTTP 401") as info:
                await export_otel(store, rec.url, continuous=True)
            assert "s3cret" not in str(info.value)
            dest = watermark.destination_key(signal_url(rec.url), "magsag")
            assert (await watermark.read(store, dest))[1] == 0
            ok = await export_otel(store, rec.url, continuous=True, headers={"Authorization": "Bearer s3cret-token"})
            assert ok.runs > 0 and (await watermark.read(store, dest))[1] == ok.runs
        finally:
            stop(proc)
            out.close()


async def test_selection_filters(tmp_path: Any, fresh_receiver: Receiver) -> None:
    async with open_storage(db_path=tmp_path / "a.db", lake_url=str(tmp_path / "lake")) as store:
        await load_demo(store, days=2, runs_per_day=5, end=END)
        runs = await _finished(store)
        failed = {r for r, v in runs.items() if v["status"] == "failed"}
        rep = await export_otel(store, fresh_receiver.url, selection=Selection(status="failed"))
        assert rep.runs == len(failed)
        agent = next(iter(runs.values()))["agent_slug"]
        since = datetime(2026, 2, 28, 12, tzinfo=UTC)
        want = {r for r, v in runs.items() if v["agent_slug"] == agent and v["started_at"] >= since.isoformat()}
        rep = await export_otel(store, fresh_receiver.url, selection=Selection(agent=agent, since=since))
        assert rep.runs == len(want)
        one = sorted(runs)[:2]
        rep = await export_otel(store, fresh_receiver.url, selection=Selection(run_ids=tuple(one)))
        assert rep.runs == 2
