"""Reading and mapping legacy run folders: every kind of damage, status rules, field mapping.

These tests need no store: they check what one run folder turns into.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from magsag.backends.schema import derived_event_id

from magsag.ingest.legacy_costs import parse_cost
from magsag.ingest.legacy_mapping import parse_run
from magsag.ingest.legacy_reader import BadValue, Rejection, read_json_document, read_jsonl
from tests.legacy_trees import T0, jsonl, log_line, metrics_doc, new_format_run, old_format_run, sample_tree, write_run

RUN = "mag-aaaa0001"


def rows_by_type(run, etype):
    return [r for r in run.rows if r[4] == etype]


def reasons(run):
    return [str(r) for r in run.rejections]


# --------------------------------------------------------------- damaged lines


def test_every_damaged_line_is_rejected_with_path_line_and_reason_and_good_lines_survive(tmp_path):
    d = write_run(
        tmp_path,
        RUN,
        logs=[
            log_line(RUN, "start", T0, {"slug": "mag-x"}, "span-1"),  # 1 good
            b'{"run_id": "mag-aaaa0001", "event": "decomposition", "timestamp": \n',  # 2 invalid JSON
            log_line(RUN, "decomposition", T0 + 1, {"tasks": 2}, "span-1"),  # 3 good
            b'{"run_id": "mag-aaaa0001", "event": "x", "timestamp": 1.0, "data": {"a": "caf\xe9"}}\n',  # 4 latin-1
            log_line(RUN, "retry", "yesterday", {}),  # 5 wrong type: timestamp
            log_line(RUN, "retry", T0 + 2, ["not", "an", "object"]),  # 6 wrong type: data
            {"run_id": RUN, "event": "retry", "data": {}},  # 7 missing timestamp
            b"\n",  # 8 blank: not a record, not an error
            log_line(RUN, "end", T0 + 3, {"status": "success"}, "span-1"),  # 9 good
            log_line(RUN, 42, T0 + 3, {}),  # 10 wrong type: event
            b'{"run_id": "mag-aaaa0001", "event": "end", "timestamp": 17956',  # 11 truncated last line
        ],
    )
    run = parse_run(d, RUN)
    p = str(d / "logs.jsonl")
    assert reasons(run) == [
        f"{p}:2: invalid JSON: unexpected end of data at column 68",
        f"{p}:4: not valid UTF-8 (byte 0xe9 at column 78)",
        f"{p}:5: timestamp is not an ISO-8601 timestamp: 'yesterday'",
        f"{p}:6: data must be an object, got a list",
        f"{p}:7: missing timestamp",
        f"{p}:10: event must be a string, got a number",
        f"{p}:11: truncated last line (no newline at end of file); invalid JSON: unexpected end of data at column 62",
    ]
    logs = rows_by_type(run, "log")
    assert [r[6].split()[0] for r in logs] == ["start", "decomposition", "end"]
    assert run.records["logs.jsonl"] == 3
    assert run.status == "succeeded"


def test_rejection_formats_as_path_line_reason():
    assert str(Rejection("/a/logs.jsonl", 7, "missing timestamp")) == "/a/logs.jsonl:7: missing timestamp"
    file_level = Rejection("/a/logs.jsonl", None, "cannot read: a directory")
    assert str(file_level) == "/a/logs.jsonl: cannot read: a directory"


def test_empty_files_give_nothing_and_no_rejection(tmp_path):
    d = tmp_path / RUN
    d.mkdir()
    for name in ("logs.jsonl", "metrics.json", "summary.json", "mcp_calls.jsonl", "events.jsonl", "plan.json"):
        (d / name).write_bytes(b"")
    run = parse_run(d, RUN)
    assert run.rows == [] and run.rejections == [] and not run.importable


def test_a_10_mb_line_is_imported_whole_and_a_line_over_the_limit_is_skipped_without_loading_it(tmp_path):
    big = "x" * (10 * 1024 * 1024)
    d = write_run(
        tmp_path,
        RUN,
        logs=[
            log_line(RUN, "start", T0, {"slug": "s"}),
            log_line(RUN, "engine.event", T0 + 1, {"output": big}),
            log_line(RUN, "end", T0 + 2, {"status": "success"}),
        ],
    )
    run = parse_run(d, RUN)
    assert run.rejections == []
    payload = json.loads(rows_by_type(run, "log")[1][7])
    assert payload == {"output": big}
    assert len(rows_by_type(run, "log")[1][6]) <= 240  # the message stays short

    small = parse_run(d, RUN, max_line_bytes=1024 * 1024)
    size = len(json.dumps(log_line(RUN, "engine.event", T0 + 1, {"output": big}))) + 1
    assert reasons(small) == [f"{d / 'logs.jsonl'}:2: line is {size:,} bytes, over the limit of 1,048,576 bytes"]
    assert [r[6].split()[0] for r in small.rows if r[4] == "log"] == ["start", "end"]


def test_unreadable_files_are_reported_once_each_and_the_rest_of_the_run_is_imported(tmp_path):
    d = new_format_run(tmp_path, "sag-bbbb0002", "advisor")
    (d / "logs.jsonl").unlink()
    (d / "logs.jsonl").mkdir()  # a directory where a file is expected
    (d / "mcp_calls.jsonl").unlink()
    os.mkfifo(d / "mcp_calls.jsonl")  # opening a FIFO would block: must not be opened
    (d / "metrics.json").unlink()
    (d / "metrics.json").symlink_to(tmp_path / "gone.json")  # broken symlink
    run = parse_run(d, "sag-bbbb0002")
    assert sorted(reasons(run)) == sorted(
        [
            f"{d / 'logs.jsonl'}: cannot read: a directory",
            f"{d / 'mcp_calls.jsonl'}: cannot read: not a regular file (FIFO, socket or device)",
            f"{d / 'metrics.json'}: cannot read: broken symbolic link",
        ]
    )
    # summary.json is still read: its metrics become events and it names the agent
    assert run.slug == "advisor"
    assert sorted(json.loads(r[7])["name"] for r in rows_by_type(run, "metric")) == ["cost_usd", "duration_ms"]


def test_unreadable_directory_entries_for_jsonl_reader_directly(tmp_path):
    os.mkfifo(tmp_path / "fifo.jsonl")
    rej: list[Rejection] = []
    assert list(read_jsonl(tmp_path / "fifo.jsonl", rej)) == []
    fifo = tmp_path / "fifo.jsonl"
    assert [str(r) for r in rej] == [f"{fifo}: cannot read: not a regular file (FIFO, socket or device)"]
    rej.clear()
    assert list(read_jsonl(tmp_path / "missing.jsonl", rej)) == [] and rej == []


def test_json_values_are_kept_exactly_or_refused(tmp_path):
    head = b'{"run_id": "mag-aaaa0001", "timestamp": 1795687273.5, '
    d = write_run(
        tmp_path,
        RUN,
        logs=[
            head + b'"event": "a", "data": {"n": 123456789012345678901234567890}}\n',
            head + b'"event": "b", "data": {"v": NaN}}\n',
            head + b'"event": "c", "data": {"s": "nul\\u0000"}}\n',
            b"\xef\xbb\xbf" + head + b'"event": "d", "data": {}}\n',
            head + b'"event": "e", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}\n",
            head + b'"event": "f", "data": {"u": "\\ud800 \xe2\x82\xac"}}\n',
        ],
    )
    run = parse_run(d, RUN)
    p = d / "logs.jsonl"
    got = {r[6].split()[0]: r[7] for r in run.rows}
    assert json.loads(got["a"]) == {"n": 123456789012345678901234567890}  # beyond 64 bits, exact
    assert "d" not in got  # a BOM is only skipped at the start of the file
    assert any(s.startswith(f"{p}:2: invalid JSON") for s in reasons(run))
    assert f"{p}:3: contains a NUL character (\\u0000), which the stores refuse" in reasons(run)
    assert any(s.startswith(f"{p}:5: ") for s in reasons(run))
    assert any(s.startswith(f"{p}:6: ") for s in reasons(run))  # a lone surrogate cannot be stored
    assert len(run.rejections) == 5


def test_bom_at_start_of_file_is_ignored(tmp_path):
    d = write_run(tmp_path, RUN, logs=[b"\xef\xbb\xbf" + jsonl([log_line(RUN, "start", T0, {})])])
    run = parse_run(d, RUN)
    assert run.rejections == [] and len(run.rows) == 1


def test_lines_of_another_run_are_refused(tmp_path):
    d = write_run(tmp_path, RUN, logs=[log_line("mag-other", "start", T0, {}), log_line(RUN, "start", T0, {})])
    run = parse_run(d, RUN)
    assert reasons(run) == [f"{d / 'logs.jsonl'}:1: run_id 'mag-other' differs from its run folder 'mag-aaaa0001'"]


def test_json_document_errors_name_the_line(tmp_path):
    (tmp_path / "m.json").write_text('{\n  "duration_ms": [\n    {"value": 1,\n')
    rej: list[Rejection] = []
    assert read_json_document(tmp_path / "m.json", rej) == (True, None)
    assert [str(r) for r in rej] == [
        f"{tmp_path / 'm.json'}:4: invalid JSON: Expecting property name enclosed in double quotes at column 1; "
        "the file looks truncated"
    ]


def test_bad_metric_samples_are_located(tmp_path):
    d = write_run(
        tmp_path,
        RUN,
        metrics={
            "duration_ms": [{"run_id": RUN, "value": 5, "timestamp": T0}, {"run_id": RUN, "timestamp": T0}],
            "tokens": {"not": "a list"},
            "cost_usd": [{"run_id": RUN, "value": 0.5, "timestamp": "soon"}],
        },
    )
    run = parse_run(d, RUN)
    p = d / "metrics.json"
    assert reasons(run) == [
        f"{p}:duration_ms[1]: missing value",
        f"{p}:tokens: samples must be a list, got an object",
        f"{p}:cost_usd[0]: timestamp is not an ISO-8601 timestamp: 'soon'",
    ]
    assert [json.loads(r[7]) for r in run.rows] == [{"name": "duration_ms", "value": 5}]


# -------------------------------------------------------------- field mapping


def test_sample_runs_map_field_by_field(tmp_path):
    runs = sample_tree(tmp_path) / "agents"
    mag = parse_run(runs / "mag-3f9a1c07", "mag-3f9a1c07")
    assert mag.rejections == []
    assert (mag.slug, mag.parent_run_id, mag.status) == ("offer-orchestrator-mag", None, "succeeded")
    logs = [r for r in mag.rows if r[4] in ("log", "delegation")]
    assert [(r[4], r[5], r[6]) for r in logs] == [
        ("log", "info", "start offer-orchestrator-mag"),
        ("log", "info", "decomposition tasks=2 task_ids=[t1, t2]"),
        ("delegation", "info", "delegation_start t1 -> compensation-advisor-sag (sag-0b1d2e30)"),
        ("delegation", "info", "delegation_complete task_id=t1 status=success"),
        ("delegation", "info", "delegation_start t2 -> compensation-advisor-sag (sag-0b1d2e31)"),
        ("delegation", "error", "delegation_failure: RateLimitError (task_id=t2)"),
        ("log", "info", "aggregation results=1 failed=1"),
        ("log", "info", "end success 3400 ms $0.0042 1312 tokens"),
    ]
    first = json.loads((runs / "mag-3f9a1c07" / "logs.jsonl").read_text().splitlines()[0])
    row = logs[0]
    assert row[1] == round(first["timestamp"] * 1_000_000)
    assert (row[2], row[3]) == ("mag-3f9a1c07", "offer-orchestrator-mag")
    assert json.loads(row[7]) == first["data"]  # payload keeps data intact
    assert (row[8], row[9]) == ("span-5685078485c34eff", None)
    metrics = {json.loads(r[7])["name"]: json.loads(r[7])["value"] for r in mag.rows if r[4] == "metric"}
    assert metrics == {"duration_ms": 3400, "cost_usd": 0.0042, "tokens": 1312}  # metrics.json == summary.metrics
    assert mag.started_us == logs[0][1] and mag.ended_us == logs[-1][1]
    assert mag.metrics["cost_usd"] == 0.0042 and mag.metrics["token_count"] == 1312
    assert mag.metrics["duration_ms"] == 3400
    assert mag.metrics["legacy_summary"] == {
        "total_logs": 8,
        "run_dir": ".runs/agents/mag-3f9a1c07",
        "span_id": "span-5685078485c34eff",
        "otel_enabled": False,
    }

    failed = parse_run(runs / "sag-0b1d2e31", "sag-0b1d2e31")
    assert (failed.slug, failed.parent_run_id, failed.status) == ("compensation-advisor-sag", "mag-3f9a1c07", "failed")
    assert [(r[5], r[6]) for r in failed.rows if r[4] == "log"] == [
        ("info", "start compensation-advisor-sag task t2 parent mag-3f9a1c07"),
        ("warning", "retry attempt 1: RateLimitError: 429"),
        ("error", "error: RateLimitError: 429 Too Many Requests"),
    ]
    (mcp,) = [r for r in failed.rows if r[4] == "mcp.call"]
    assert mcp[6] == "mcp.call pg.query success 41 ms" and mcp[5] == "info"
    assert json.loads(mcp[7]) == {
        "server_id": "pg",
        "tool": "query",
        "status": "success",
        "transport": "stdio",
        "latency_ms": 41,
        "arguments": {"sql": "***"},
    }


def test_event_ids_are_derived_from_the_source_and_stable(tmp_path):
    d = new_format_run(tmp_path, RUN, "s")
    a, b = parse_run(d, RUN), parse_run(d, RUN)
    assert [r[0] for r in a.rows] == [r[0] for r in b.rows]
    assert len({r[0] for r in a.rows}) == len(a.rows)
    for r in a.rows:  # time-ordered: the UUIDv7 time field is the event's millisecond
        assert int(r[0].replace("-", "")[:12], 16) == r[1] // 1000
    first_line = (d / "logs.jsonl").read_bytes().splitlines()[0]
    from hashlib import blake2b

    assert a.rows[0][0] == derived_event_id(
        a.rows[0][1], RUN, "logs.jsonl", blake2b(first_line.strip(), digest_size=12).hexdigest()
    )


def test_older_format_without_span_ids_and_with_a_short_summary(tmp_path):
    d = old_format_run(tmp_path, "run-0123456789ab", "legacy-agent")
    run = parse_run(d, "run-0123456789ab")
    assert run.rejections == []
    assert run.slug == "legacy-agent" and run.status == "succeeded"
    assert all(r[8] is None and r[9] is None for r in run.rows)
    metric_rows = sorted((json.loads(r[7])["name"], json.loads(r[7])["value"]) for r in run.rows if r[4] == "metric")
    assert metric_rows == [("duration_ms", 1000), ("tokens", 2), ("tokens", 40)]
    assert run.metrics["token_count"] == 42  # no summary.token_count: the samples add up
    assert run.metrics["duration_ms"] == 1000
    assert run.metrics["legacy_summary"] == {"total_logs": 2, "run_dir": ".runs/agents/run-0123456789ab"}


def test_slug_falls_back_to_a_log_line_then_unknown(tmp_path):
    d = write_run(tmp_path, "mag-abcdef", logs=[log_line("mag-abcdef", "mag.start", T0, {"slug": "from-log"})])
    assert parse_run(d, "mag-abcdef").slug == "from-log"
    d = write_run(tmp_path, "mag-abcdee", logs=[log_line("mag-abcdee", "mag.start", T0, {})])
    assert parse_run(d, "mag-abcdee").slug == "unknown"


def test_plan_and_summary_extras_go_to_run_metrics(tmp_path):
    d = new_format_run(tmp_path, RUN, "s")
    summary = json.loads((d / "summary.json").read_text())
    summary.update(llm_plan={"model": "m"}, agent_plan={"steps": 2}, deterministic=True, replay_mode=False)
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "plan.json").write_text(json.dumps({"steps": ["a", "b"]}))
    run = parse_run(d, RUN)
    assert run.metrics["plan"] == {"steps": ["a", "b"]}
    assert run.metrics["agent_plan"] == {"steps": 2}
    assert run.metrics["llm_plan"] == {"model": "m"}
    assert run.metrics["legacy_summary"]["deterministic"] is True


def test_event_envelopes_keep_their_own_type(tmp_path):
    d = write_run(
        tmp_path,
        RUN,
        events=[
            {
                "ts": "2026-11-26T10:01:13.500000",
                "run_id": RUN,
                "span_id": "span-9",
                "type": "artifact",
                "payload": {"uri": "s3://b/k"},
                "level": "INFO",
                "kv": {"k": 1},
            },
            {"ts": "2026-11-26T10:01:14Z", "run_id": RUN, "type": "custom.thing", "payload": {}, "level": "LOUD"},
        ],
    )
    run = parse_run(d, RUN)
    (row,) = run.rows
    assert (row[4], row[5], row[8]) == ("artifact", "info", "span-9")
    assert json.loads(row[7]) == {"uri": "s3://b/k", "kv": {"k": 1}}
    assert row[1] == 1795687273500000  # naive ISO is UTC (the logger wrote utcnow())
    assert reasons(run) == [f"{d / 'events.jsonl'}:2: level 'LOUD' is not one of debug, info, warning, error, critical"]


# ---------------------------------------------------------------- run status


@pytest.mark.parametrize(
    ("events", "summary", "status"),
    [
        ([("start", {}), ("end", {"status": "success"})], True, "succeeded"),
        ([("start", {}), ("end", {})], False, "succeeded"),
        ([("start", {}), ("error", {"error": "x"})], True, "failed"),
        ([("start", {}), ("error", {"error": "x"}), ("retry", {}), ("end", {"status": "success"})], True, "succeeded"),
        ([("start", {}), ("end", {"status": "success"}), ("error", {"error": "late"})], True, "failed"),
        ([("start", {}), ("engine.execution_failed", {})], False, "failed"),
        ([("start", {}), ("pre_eval_failure", {})], False, "failed"),
        ([("start", {}), ("post_eval_failure", {}), ("end", {"status": "success"})], False, "succeeded"),
        ([("start", {}), ("delegation_failure", {}), ("aggregation", {}), ("end", {})], False, "succeeded"),
        ([("mag.start", {}), ("all_delegations_failed", {})], False, "failed"),
        ([("start", {}), ("end", {"status": "failure"})], True, "failed"),
        ([("start", {}), ("end", {"status": "cancelled"})], True, "canceled"),
        ([("start", {}), ("retry", {})], False, "running"),
        ([("start", {}), ("retry", {})], True, "succeeded"),
    ],
)
def test_run_status_rules(tmp_path, events, summary, status):
    logs = [log_line(RUN, name, T0 + i, data) for i, (name, data) in enumerate(events)]
    d = write_run(tmp_path, RUN, logs=logs, summary={"run_id": RUN, "total_logs": len(logs)} if summary else None)
    run = parse_run(d, RUN)
    assert run.status == status
    assert run.started_us == round(T0 * 1e6)
    assert run.ended_us == (None if status == "running" else round((T0 + len(events) - 1) * 1e6))


def test_status_follows_time_order_not_file_order(tmp_path):
    logs = [log_line(RUN, "end", T0 + 5, {"status": "success"}), log_line(RUN, "error", T0 + 1, {"error": "x"})]
    assert parse_run(write_run(tmp_path, RUN, logs=logs), RUN).status == "succeeded"


def test_sag_parent_comes_from_its_start_line(tmp_path):
    d = new_format_run(tmp_path, "sag-0000aaaa", "advisor", parent="mag-0000bbbb")
    assert parse_run(d, "sag-0000aaaa").parent_run_id == "mag-0000bbbb"


def test_duplicate_lines_are_one_event(tmp_path):
    line = log_line(RUN, "start", T0, {})
    d = write_run(tmp_path, RUN, logs=[line, line])
    run = parse_run(d, RUN)
    assert len(run.rows) == 1 and run.duplicates == 1


# ---------------------------------------------------------------- cost ledger


def test_cost_records_validate_and_keep_everything():
    rec = {
        "timestamp": "2026-11-26T10:01:13.288726+00:00",
        "model": "gpt",
        "input_tokens": 10,
        "output_tokens": 5,
        "total_tokens": 15,
        "cost_usd": 0.5,
        "run_id": "sag-1",
        "step": "sag",
        "agent": "advisor",
        "metadata": '{"stage": "sag"}',
        "provider": "openai",
    }
    run_id, agent, ts_us, payload = parse_cost(rec)
    assert (run_id, agent, ts_us) == ("sag-1", "advisor", 1795687273288726)
    assert payload == {
        "model": "gpt",
        "input_tokens": 10,
        "output_tokens": 5,
        "total_tokens": 15,
        "cost_usd": 0.5,
        "step": "sag",
        "metadata": {"stage": "sag"},
        "provider": "openai",
    }
    assert parse_cost({**rec, "run_id": None})[0] == "costs-unattributed"
    with pytest.raises(BadValue, match="input_tokens must be an integer, got a string"):
        parse_cost({**rec, "input_tokens": "10"})
    with pytest.raises(BadValue, match="missing cost_usd"):
        parse_cost({k: v for k, v in rec.items() if k != "cost_usd"})


def test_metrics_file_of_wrong_shape(tmp_path):
    d = write_run(tmp_path, RUN, metrics=metrics_doc(RUN, {"x": [(T0, 1)]}))
    (d / "metrics.json").write_text("[1, 2]")
    run = parse_run(d, RUN)
    assert reasons(run) == [f"{d / 'metrics.json'}: metrics must be an object, got a list"]


def test_run_folder_listing_failure_is_reported(tmp_path: Path):
    run = parse_run(tmp_path / "does-not-exist", "x")
    assert len(run.rejections) == 1 and "cannot list the run folder" in str(run.rejections[0])


def test_without_orjson_the_standard_library_path_gives_the_same_records(tmp_path, monkeypatch):
    import magsag.ingest.legacy_reader as reader

    d = write_run(
        tmp_path,
        RUN,
        logs=[
            log_line(RUN, "start", T0, {"slug": "s", "n": 2**70, "f": 0.1}),
            b'{"run_id": "mag-aaaa0001", "event": "x", "timestamp": 1795687273.5, "data": {"v": NaN}}\n',
            b"{oops\n",
        ],
    )
    fast = parse_run(d, RUN)
    monkeypatch.setattr(reader, "_fast_loads", json.loads)
    monkeypatch.setattr(reader, "_FAST_ERRORS", (ValueError,))
    monkeypatch.setattr(
        reader, "_fast_dumps", lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    )
    monkeypatch.setattr(reader, "_FAST_DUMP_ERRORS", (ValueError, TypeError))
    slow = parse_run(d, RUN)
    assert slow.rows == fast.rows
    assert [r.where for r in slow.rejections] == [r.where for r in fast.rejections] == [2, 3]
    assert all(r.reason.startswith("invalid JSON") or "non-finite" in r.reason for r in slow.rejections)
