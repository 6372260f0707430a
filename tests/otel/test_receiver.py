"""The OTLP receiver over HTTP on loopback: a real OTel SDK agent in, the store answers,
and every protocol edge (JSON, gzip, resend, malformed, partial success, limits, token)."""

from __future__ import annotations

import gzip
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from magsag.otel.export import export_otel
from magsag.otel.select import Selection
from magsag.storage import open_storage
from tests.otel.conftest import Phoenix, Receiver, iso_us

AGENT = Path(__file__).with_name("agent_script.py")
JSON_H = {"Content-Type": "application/json"}
PB_H = {"Content-Type": "application/x-protobuf"}


def _events_count(rec: Receiver) -> int:
    with sqlite3.connect(rec.db) as c:
        return c.execute("SELECT count(*) FROM events").fetchone()[0]


def _span(trace: str, span: str, name: str, parent: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "traceId": trace,
        "spanId": span,
        "parentSpanId": parent,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": "1767225600000000000",
        "endTimeUnixNano": "1767225601500000000",
        **extra,
    }


def _attr(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _traces_json(*spans: dict[str, Any], service: str = "json-agent") -> bytes:
    res = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
    return orjson.dumps(
        {"resourceSpans": [{"resource": res, "scopeSpans": [{"scope": {"name": "t"}, "spans": list(spans)}]}]}
    )


@pytest.mark.phoenix
@pytest.mark.xdist_group("phoenix")
async def test_real_sdk_agent_into_the_store_and_out_to_phoenix(
    receiver: Receiver, phoenix: Phoenix, tmp_path: Path
) -> None:
    truth = tmp_path / "truth.json"
    out = subprocess.run(
        [sys.executable, str(AGENT), receiver.url, "sdk1", str(truth), f"Authorization=Bearer {receiver.token}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    trace = out.stdout.strip().splitlines()[-1]
    run_id = f"otel-{trace}"
    async with open_storage(db_path=receiver.db, lake_url=str(receiver.lake)) as storage:
        run = await storage.get_run(run_id)
        assert run is not None
        assert (run["agent_slug"], run["status"], run["parent_run_id"], run["tags"]) == (
            "quote-agent",
            "succeeded",
            None,
            ["sdk1"],
        )
        events = [e async for e in storage.get_events(run_id)]
        by_type: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            by_type.setdefault(e["type"], []).append(e)
        calls = {e["payload"]["tool"]: e for e in by_type["mcp.call"]}
        assert set(calls) == {"get_quote", "convert"}
        assert calls["get_quote"]["payload"]["server_id"] == "market-data"
        assert calls["get_quote"]["payload"]["arguments"] == {"symbol": "ACME", "currency": "EUR"}
        assert calls["get_quote"]["payload"]["transport"] == "http"
        assert (calls["convert"]["level"], calls["convert"]["payload"]["status"]) == ("error", "error")
        assert calls["convert"]["payload"]["error"] == "upstream returned 502 Bad Gateway"
        metrics = {e["payload"]["name"]: e["payload"]["value"] for e in by_type["metric"]}
        assert metrics == {"input_tokens": 812, "output_tokens": 96, "cost_usd": 0.00042}
        assert {e["payload"]["model"] for e in by_type["metric"]} == {"gpt-4.1-mini"}
        logs = {e["msg"] for e in by_type["log"]}
        assert {"invoke_agent quote-agent", "chat gpt-4.1-mini", "summarize answer", "draft ready"} <= logs
        assert "quote fetched for sdk1" in logs  # the OTel log record, on the tool span
        assert all(e["span_id"] for e in events if e["msg"] != "quote fetched for sdk1" or e["span_id"])
        hits = await storage.search_text("quote fetched sdk1")
        assert [h["run_id"] for h in hits] == [run_id]
        got = await storage.query_metrics("input_tokens", aggregation="sum")
        assert got["value"] == 812

        rep = await export_otel(
            storage, phoenix.otlp, project="via-magsag-sdk1", selection=Selection(run_ids=(run_id,))
        )
    assert rep.runs == 1 and rep.spans == 5
    again = phoenix.wait_spans("via-magsag-sdk1", 5)
    # The SDK's own spans, to the µs Phoenix keeps, are what Phoenix got from the store.
    sdk = {
        (
            t["trace_id"], t["span_id"], t["parent_id"], t["name"], t["start_ns"] // 1000, t["end_ns"] // 1000,
            {"UNSET": "UNSET", "OK": "OK", "ERROR": "ERROR"}[t["status"]], t["status_message"], tuple(t["events"]),
        )
        for t in orjson.loads(truth.read_bytes())
    }  # fmt: skip
    got = {
        (
            s["context"]["trace_id"], s["context"]["span_id"], s["parent_id"], s["name"],
            iso_us(s["start_time"]), iso_us(s["end_time"]), s["status_code"], s["status_message"] or "",
            tuple(e["name"] for e in s["events"] if e["name"] != "log"),  # + the OTel log record, as a span event
        )
        for s in again
    }  # fmt: skip
    assert got == sdk
    assert {s["context"]["trace_id"] for s in again} == {trace}


def test_json_encoding_and_idempotent_resend(receiver: Receiver) -> None:
    trace = "5b8efff798038103d269b633813fc60c"
    body = _traces_json(
        _span(trace, "eee19b7ec3c1b174", "agent step", attributes=[_attr("magsag.run_id", "json-run-1")]),
        _span(
            trace,
            "eee19b7ec3c1b175",
            "tools/call lookup",
            "eee19b7ec3c1b174",
            status={"code": 2, "message": "boom"},
            attributes=[_attr("gen_ai.operation.name", "execute_tool"), _attr("gen_ai.tool.name", "lookup")],
        ),
    )
    r = receiver.post("/v1/traces", body, JSON_H)
    assert r.status == 200, r.data
    assert r.headers["content-type"].startswith("application/json")
    assert orjson.loads(r.data) == {}
    n = _events_count(receiver)
    again = receiver.post("/v1/traces", gzip.compress(body), {**JSON_H, "Content-Encoding": "gzip"})
    assert again.status == 200
    assert _events_count(receiver) == n  # a resent batch adds nothing
    with sqlite3.connect(receiver.db) as c:
        run = c.execute(
            "SELECT agent_slug, status, started_at, ended_at FROM runs WHERE run_id = 'json-run-1'"
        ).fetchone()
        call = c.execute("SELECT type, level, json_extract(payload, '$.latency_ms'), span_id, parent_span_id "
                         "FROM events WHERE run_id = 'json-run-1' AND type = 'mcp.call'").fetchone()  # fmt: skip
    assert run == ("json-agent", "succeeded", 1767225600000000, 1767225601500000)
    assert call == ("mcp.call", "error", 1500.0, "eee19b7ec3c1b175", "eee19b7ec3c1b174")


def test_protobuf_partial_success(receiver: Receiver) -> None:
    req = trace_service_pb2.ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    t0 = 1_767_225_600_000_000_000
    good = spans.add(
        trace_id=bytes.fromhex("a" * 32), span_id=bytes.fromhex("b" * 16), name="fine", start_time_unix_nano=t0
    )
    good.end_time_unix_nano = t0
    good.attributes.add(key="magsag.run_id").value.string_value = "pb-run-1"
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x00" * 8, name="zero span id")
    spans.add(trace_id=b"\x01" * 3, span_id=b"\x02" * 8, name="short trace id")
    r = receiver.post("/v1/traces", req.SerializeToString(), PB_H)
    assert r.status == 200
    resp = trace_service_pb2.ExportTraceServiceResponse.FromString(r.data)
    assert resp.partial_success.rejected_spans == 2
    assert "zero span id" in resp.partial_success.error_message
    with sqlite3.connect(receiver.db) as c:
        assert c.execute("SELECT count(*) FROM runs WHERE run_id = 'pb-run-1'").fetchone() == (1,)


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        (b"\x0a\xff\xff\xff", PB_H, 400, "malformed protobuf body"),
        (b'{"resourceSpans": [', JSON_H, 400, "malformed JSON body"),
        (b'{"resourceSpans": 7}', JSON_H, 400, "not an OTLP JSON request"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', JSON_H, 400, "traceId"),
        (b"not gzip at all", {**PB_H, "Content-Encoding": "gzip"}, 400, "malformed gzip body"),
        (b"{}", {"Content-Type": "text/plain"}, 415, "unsupported Content-Type"),
        (b"x" * (70 * 1024), PB_H, 413, "body larger than"),
        (gzip.compress(b"\x00" * (2 * 1024 * 1024), mtime=0), {**PB_H, "Content-Encoding": "gzip"}, 413, "larger than"),
    ],
    ids=["protobuf", "json", "json-shape", "hex-id", "gzip", "content-type", "too-large", "gzip-bomb"],
)
def test_bad_requests_get_one_line_and_write_nothing(
    receiver: Receiver, body: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    n = _events_count(receiver)
    r = receiver.post("/v1/traces", body, headers)
    assert r.status == status
    text = r.data.decode()
    assert reason in text and text.count("\n") == 1
    assert _events_count(receiver) == n


def test_bearer_token_required(receiver: Receiver) -> None:
    body = _traces_json(_span("1" * 32, "2" * 16, "tokenless"))
    n = _events_count(receiver)
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {receiver.token}"}):
        r = receiver.http.request("POST", receiver.url + "/v1/traces", body=body, headers={**JSON_H, **auth})
        assert r.status == 401
        assert receiver.token not in r.data.decode()
    assert _events_count(receiver) == n


def test_log_records_become_log_events(receiver: Receiver) -> None:
    rec = {
        "timeUnixNano": "1767225602000000000",
        "severityNumber": 17,
        "severityText": "ERROR",
        "body": {"stringValue": "payment gateway timed out"},
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "attributes": [{"key": "magsag.run_id", "value": {"stringValue": "json-run-1"}}],
    }
    structured = {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": "1"}}]}}
    warn = {**rec, "severityNumber": 0, "severityText": "warn", "body": structured}
    body = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [rec, warn]}]}]})
    r = receiver.post("/v1/logs", body, JSON_H)
    assert r.status == 200, r.data
    again = receiver.post("/v1/logs", body, JSON_H)
    assert again.status == 200
    with sqlite3.connect(receiver.db) as c:
        rows = c.execute(
            "SELECT level, msg, ts, span_id FROM events WHERE run_id = 'json-run-1' AND type = 'log' "
            "AND json_extract(payload, '$.otel.severity_number') IS NOT NULL ORDER BY level"
        ).fetchall()
    assert rows == [
        ("error", "payment gateway timed out", 1767225602000000, "eee19b7ec3c1b174"),
        ("warning", '{"a":1}', 1767225602000000, "eee19b7ec3c1b174"),
    ]
