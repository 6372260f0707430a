"""OTLP ingest benchmark: spans/s through the receiver beside the store's own ``append_events``.

    python3 bench/otlp.py [--spans 20000] [--batch 512] [--no-phoenix] [--json] [--out bench/results/otlp.json]

Spans are made by the real OpenTelemetry SDK (an agent run with LLM, tool and plain
child spans, GenAI/OpenInference attributes), outside the timings. Then, in the same run:

* **receiver**: the request bodies the SDK's ``OTLPSpanExporter`` sends (made by its own
  encoder, batches of ``--batch``) are POSTed to ``magsag.otel.receiver`` under uvicorn on
  loopback over a fresh SQLite store; the time is the sum of the requests, each of which
  returns after its batch is committed. This is the receiver's rate (the ratio's figure).
* **end to end**: the SDK's ``OTLPSpanExporter.export`` itself, into another fresh store:
  the same plus the SDK's own Python encoding, which an agent pays in its own process.
* **append_events**: the same events (the receiver's own mapping of the same spans) go
  into another fresh SQLite store with ``append_events`` in the same batches.

* **peer**: Arize Phoenix's own OTLP/HTTP receiver (when ``arize-phoenix`` is installed,
  ``--no-phoenix`` skips it) takes the same bodies; timed until its GraphQL ``recordCount``
  shows every span, since it acknowledges before its background insert.

Ratio = receiver events/s ÷ append_events events/s (a span is one event, an LLM span one
more per usage figure; both sides store exactly the same rows). The
figures go to stdout and, as JSON, to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _report import save


def make_spans(n: int) -> list[Any]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    made = 0
    while made < n:
        with tracer.start_as_current_span("invoke_agent bench-agent", attributes={"gen_ai.agent.name": "bench-agent"}):
            made += 1
            for i in range(min(49, n - made)):
                kind = i % 3
                if kind == 0:
                    attrs = {"openinference.span.kind": "TOOL", "tool.name": "lookup", "tool.parameters": '{"q": 1}'}
                elif kind == 1:
                    attrs = {
                        "gen_ai.operation.name": "chat",
                        "gen_ai.request.model": "m",
                        "gen_ai.usage.input_tokens": 9,
                    }
                else:
                    attrs = {"step": i}
                with tracer.start_as_current_span(f"step {kind}", attributes=attrs):
                    pass
                made += 1
    spans = list(memory.get_finished_spans())
    provider.shutdown()
    return spans[:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """``magsag.otel.receiver`` under uvicorn on loopback, over a fresh SQLite store."""

    def __init__(self, work: Path, name: str):
        self.port = free_port()
        self.db = work / f"{name}.db"
        env = {**os.environ, "MAGSAG_STORAGE_DB_PATH": str(self.db), "MAGSAG_STORAGE_LAKE_URL": str(work / f"{name}-l")}
        env.pop("MAGSAG_SERVE_TOKEN", None)
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "magsag.otel.receiver:app", "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "warning"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, env=env, cwd=work)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("the receiver did not start") from None
                time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def stored(self) -> int:
        import sqlite3

        with sqlite3.connect(self.db) as c:
            return c.execute("SELECT count(*) FROM events").fetchone()[0]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def receiver_rate(spans: list[Any], batch: int, work: Path) -> tuple[float, int]:
    """The receiver's side: the bodies the SDK exporter sends (its own encoder), POSTed over HTTP."""
    import urllib3
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    bodies = [encode_spans(spans[i : i + batch]).SerializeToString() for i in range(0, len(spans), batch)]
    server = _Server(work, "receiver")
    try:
        http = urllib3.PoolManager(timeout=60.0)
        headers = {"Content-Type": "application/x-protobuf"}
        http.request("POST", server.url, body=encode_spans(spans[:1]).SerializeToString(), headers=headers)  # warm-up
        total = 0.0
        for body in bodies:
            t = time.perf_counter()
            r = http.request("POST", server.url, body=body, headers=headers)
            total += time.perf_counter() - t
            if r.status != 200:
                raise SystemExit(f"the receiver answered {r.status}: {r.data[:200]!r}")
        return server.stored() / total, server.stored()
    finally:
        server.stop()


def sdk_rate(spans: list[Any], batch: int, work: Path) -> tuple[float, int]:
    """End to end: the SDK's ``OTLPSpanExporter.export`` (its encoding included) to the receiver."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    server = _Server(work, "sdk")
    try:
        exporter = OTLPSpanExporter(endpoint=server.url, timeout=60)
        exporter.export(spans[:1])  # warm-up (not timed)
        total = 0.0
        for i in range(0, len(spans), batch):
            t = time.perf_counter()
            result = exporter.export(spans[i : i + batch])
            total += time.perf_counter() - t
            if result is not SpanExportResult.SUCCESS:
                raise SystemExit(f"the receiver refused batch {i // batch}")
        exporter.shutdown()
        return server.stored() / total, server.stored()
    finally:
        server.stop()


def append_rate(spans: list[Any], batch: int, work: Path) -> float:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from magsag.otel.inbound import map_traces
    from magsag.storage import open_storage

    events = []
    for i in range(0, len(spans), batch):
        events.append(map_traces(encode_spans(spans[i : i + batch])).events)

    async def run() -> float:
        async with open_storage(db_path=work / "direct.db", lake_url=str(work / "l2")) as storage:
            total = 0.0
            for chunk in events:
                t = time.perf_counter()
                await storage.append_events(chunk)
                total += time.perf_counter() - t
            return sum(len(c) for c in events) / total

    return asyncio.run(run())


def phoenix_rate(spans: list[Any], batch: int, work: Path) -> float | None:
    """The like-for-like peer: Arize Phoenix's own OTLP/HTTP receiver (``phoenix serve``) given
    the same bodies. Phoenix acknowledges before it inserts (a background bulk inserter), so
    its time runs from the first POST until its GraphQL ``recordCount`` shows every span:
    spans/s stored and readable, as ours. ``None`` when arize-phoenix is not installed."""
    import shutil

    import orjson
    import urllib3

    try:
        import phoenix.server.main  # noqa: F401
    except ImportError:
        return None
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    port, grpc = free_port(), free_port()
    home = work / "phoenix"
    home.mkdir()
    env = {**os.environ, "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(grpc), "PHOENIX_HOST": "127.0.0.1",
           "PHOENIX_WORKING_DIR": str(home), "PHOENIX_TELEMETRY_ENABLED": "false"}  # fmt: skip
    exe = shutil.which("phoenix", path=str(Path(sys.executable).parent)) or shutil.which("phoenix")
    cmd = [exe, "serve"] if exe else [sys.executable, "-m", "phoenix.server.main", "serve"]
    with (home / "phoenix.log").open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    http = urllib3.PoolManager(retries=False, timeout=60.0)
    base = f"http://127.0.0.1:{port}"
    query = orjson.dumps({"query": "{ projects { edges { node { name recordCount } } } }"})

    def stored() -> int:
        r = http.request("POST", f"{base}/graphql", body=query, headers={"Content-Type": "application/json"})
        edges = orjson.loads(r.data)["data"]["projects"]["edges"]
        return sum(int(e["node"]["recordCount"]) for e in edges)

    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if http.request("GET", f"{base}/healthz").status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("Phoenix did not start (see its log)")
            time.sleep(0.5)
        headers = {"Content-Type": "application/x-protobuf"}
        bodies = [encode_spans(spans[i : i + batch]).SerializeToString() for i in range(0, len(spans), batch)]
        t = time.perf_counter()
        for body in bodies:
            r = http.request("POST", f"{base}/v1/traces", body=body, headers=headers)
            if r.status != 200:
                raise SystemExit(f"Phoenix answered {r.status}: {r.data[:200]!r}")
        while stored() < len(spans):
            if time.perf_counter() - t > 600:
                raise SystemExit("Phoenix did not store every span within 600 s")
            time.sleep(0.05)
        return len(spans) / (time.perf_counter() - t)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=512, help="spans per OTLP request (the SDK's default batch)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--no-phoenix", action="store_true", help="skip the Arize Phoenix peer (slow to start)")
    ap.add_argument("--out", default=None, help="where the JSON goes (default bench/results/otlp.json)")
    args = ap.parse_args()
    spans = make_spans(args.spans)
    with tempfile.TemporaryDirectory(prefix="magsag-otlp-") as tmp:
        work = Path(tmp)
        base = append_rate(spans, args.batch, work)
        ev_rate, stored = receiver_rate(spans, args.batch, work)
        sdk_ev_rate, _sdk_stored = sdk_rate(spans, args.batch, work)
        peer = None if args.no_phoenix else phoenix_rate(spans, args.batch, work)
    per_span = stored / len(spans)
    result = {
        "spans": len(spans),
        "batch": args.batch,
        "stored_events": stored,
        "append_events_per_s": round(base),
        "receiver_events_per_s": round(ev_rate),
        "receiver_spans_per_s": round(ev_rate / per_span),
        "ratio": round(ev_rate / base, 3),
        "sdk_exporter_events_per_s": round(sdk_ev_rate),
        "sdk_exporter_spans_per_s": round(sdk_ev_rate / per_span),
        "sdk_exporter_ratio": round(sdk_ev_rate / base, 3),
        "target_ratio": 0.5,
        "phoenix_spans_per_s": round(peer) if peer else None,
        "receiver_vs_phoenix": round(ev_rate / per_span / peer, 2) if peer else None,
    }
    path = save("otlp", result, out=args.out)
    if args.json:
        sys.stdout.write(path.read_text())
    else:
        load = os.getloadavg()[0]
        print(f"spans: {len(spans)} in batches of {args.batch} ({stored} events stored; load average {load:.1f})")
        print(f"append_events (same events, same batches):       {base:,.0f} events/s")
        print(
            f"receiver (SDK-encoded bodies -> HTTP -> store):  {ev_rate:,.0f} events/s "
            f"= {ev_rate / per_span:,.0f} spans/s, ratio {ev_rate / base:.2f}x (target >= 0.5x)"
        )
        print(
            f"end to end (OTLPSpanExporter.export, its encoding included): {sdk_ev_rate:,.0f} events/s "
            f"= {sdk_ev_rate / per_span:,.0f} spans/s, ratio {sdk_ev_rate / base:.2f}x"
        )
        if peer:
            print(
                f"peer: Arize Phoenix's OTLP receiver, same bodies, until readable: {peer:,.0f} spans/s "
                f"(ours {ev_rate / per_span / peer:.1f}x of it)"
            )


if __name__ == "__main__":
    main()
