"""An agent instrumented with the OpenTelemetry SDK, as a user would write it.

Run as ``python agent_script.py ENDPOINT TAG TRUTH.json [Header=value ...]``: one agent run (a root span), an LLM
call with GenAI/OpenInference usage attributes, an OpenInference-style tool span (an MCP
tools/call), a failing tool call, a plain step with a span event, and a log record in the
run's context. Everything goes out through the real OTLP/HTTP exporters; the script
prints the trace id and exits once the exporters have flushed. The spans as the SDK finished
them are also written to TRUTH.json (what a re-export must reproduce).
"""

from __future__ import annotations

import json
import logging
import sys

from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode


def main(endpoint: str, tag: str, truth: str, headers: dict[str, str]) -> None:
    resource = Resource.create({"service.name": "quote-agent", "openinference.project.name": f"direct-{tag}"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", headers=headers)))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    logs = LoggerProvider(resource=resource)
    logs.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{endpoint}/v1/logs", headers=headers))
    )
    set_logger_provider(logs)
    log = logging.getLogger("quote-agent")
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logs))
    log.setLevel(logging.INFO)
    tracer = provider.get_tracer("quote-agent", "1.0")

    with tracer.start_as_current_span(
        "invoke_agent quote-agent",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "quote-agent", "tag.tags": [tag]},
    ) as root:
        with tracer.start_as_current_span(
            "chat gpt-4.1-mini",
            attributes={
                "openinference.span.kind": "LLM",
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4.1-mini",
                "gen_ai.usage.input_tokens": 812,
                "gen_ai.usage.output_tokens": 96,
                "llm.cost.total": 0.00042,
            },
        ):
            pass
        with tracer.start_as_current_span(
            "tools/call get_quote",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "openinference.span.kind": "TOOL",
                "tool.name": "get_quote",
                "tool.parameters": json.dumps({"symbol": "ACME", "currency": "EUR"}),
                "mcp.method.name": "tools/call",
                "magsag.mcp.server_id": "market-data",
                "network.transport": "tcp",
            },
        ):
            log.info("quote fetched for %s", tag)
        with tracer.start_as_current_span(
            "tools/call convert",
            kind=trace.SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "convert"},
        ) as bad:
            bad.set_status(Status(StatusCode.ERROR, "upstream returned 502 Bad Gateway"))
        with tracer.start_as_current_span("summarize answer") as step:
            step.add_event("draft ready", {"chars": 180})
        root.set_status(Status(StatusCode.OK))
        trace_id = format(root.get_span_context().trace_id, "032x")
    provider.force_flush()
    logs.force_flush()
    spans = [
        {
            "trace_id": format(sp.context.trace_id, "032x"),
            "span_id": format(sp.context.span_id, "016x"),
            "parent_id": format(sp.parent.span_id, "016x") if sp.parent else None,
            "name": sp.name,
            "start_ns": sp.start_time,
            "end_ns": sp.end_time,
            "status": sp.status.status_code.name,
            "status_message": sp.status.description or "",
            "events": [ev.name for ev in sp.events],
        }
        for sp in memory.get_finished_spans()
    ]
    with open(truth, "w") as f:
        json.dump(spans, f)
    provider.shutdown()
    logs.shutdown()
    print(trace_id)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], dict(h.split("=", 1) for h in sys.argv[4:]))
