"""What maps to what between the store and OpenTelemetry: the constants of both directions.

``outbound.py`` (store -> OTLP) and ``inbound.py`` (OTLP -> store) take every attribute
name, span name, kind and status rule from here, and the tables of docs/otel.md are
generated from the ``*_TABLE`` constants below (``python3 -m magsag.otel.docs``; a test
checks that the file matches). Names come from the OpenTelemetry GenAI and MCP semantic
conventions where those name an attribute, from OpenInference (what Arize Phoenix and
agent frameworks emit) where they do not, and under ``magsag.*`` for the rest.
"""

from __future__ import annotations

# ------------------------------------------------------------------ attribute names
# OpenTelemetry GenAI semantic conventions
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_ARGS = "gen_ai.tool.call.arguments"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
# OpenTelemetry MCP semantic conventions and general attributes
MCP_METHOD = "mcp.method.name"
MCP_TOOLS_CALL = "tools/call"
NETWORK_TRANSPORT = "network.transport"
SERVER_ADDRESS = "server.address"
ERROR_TYPE = "error.type"
SERVICE_NAME = "service.name"
EXCEPTION_MESSAGE = "exception.message"
EXCEPTION_TYPE = "exception.type"
# OpenInference
OI_SPAN_KIND = "openinference.span.kind"
OI_PROJECT = "openinference.project.name"
OI_TOOL_NAME = "tool.name"
OI_TOOL_PARAMETERS = "tool.parameters"
OI_INPUT_VALUE = "input.value"
OI_MODEL = "llm.model_name"
OI_PROMPT_TOKENS = "llm.token_count.prompt"
OI_COMPLETION_TOKENS = "llm.token_count.completion"
OI_TOTAL_TOKENS = "llm.token_count.total"
OI_COST_TOTAL = "llm.cost.total"
OI_TAGS = "tag.tags"
OI_AGENT_NAME = "agent.name"
# magsag's own
M_RUN_ID = "magsag.run_id"
M_PARENT_RUN_ID = "magsag.parent_run_id"
M_AGENT = "magsag.agent_slug"
M_STATUS = "magsag.status"
M_EVENT_ID = "magsag.event_id"
M_LEVEL = "magsag.level"
M_MESSAGE = "magsag.message"
M_PAYLOAD = "magsag.payload"
M_ARTIFACT = "magsag.artifact_uri"
M_CONTRACT_ID = "magsag.contract_id"
M_CONTRACT_VERSION = "magsag.contract_version"
M_SERVER_ID = "magsag.mcp.server_id"
M_LATENCY = "magsag.mcp.latency_ms"
M_TASK_ID = "magsag.delegation.task_id"
M_DELEGATE = "magsag.delegation.agent"
M_DELEGATE_RUN = "magsag.delegation.run_id"
M_METRIC_PREFIX = "magsag.metric."

# Span kinds (OTLP enum values) and status codes
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
KIND_NAMES = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
STATUS_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}

# The payload key under which the receiver keeps a span's OTel identity and attributes, so
# a re-export gives back the same span (name, kind, attributes, status, end time).
OTEL_KEY = "otel"

# ------------------------------------------------------------------ store -> OTLP

RUN_SPAN_NAME = "invoke_agent {agent_slug}"
MCP_SPAN_NAME = "tools/call {tool}"
DELEGATION_SPAN_NAME = "delegate {task_id} to {agent}"

# Run status -> (OTLP status code, message rule)
RUN_STATUS_OUT = {
    "succeeded": STATUS_OK,
    "failed": STATUS_ERROR,
    "canceled": STATUS_UNSET,
}

# MCP transport names in the store -> network.transport values of the MCP conventions
TRANSPORT_OUT = {"stdio": "pipe", "http": "tcp", "sse": "tcp", "streamable-http": "tcp", "websocket": "tcp"}
TRANSPORT_IN = {"pipe": "stdio", "tcp": "http", "quic": "http", "unix": "stdio"}

# Metric names (metric events' payload.name, run metrics keys, cost events' fields) ->
# span attributes of the run. Names not listed become magsag.metric.<name>.
METRIC_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "input_tokens": (GEN_AI_INPUT_TOKENS, OI_PROMPT_TOKENS),
    "prompt_tokens": (GEN_AI_INPUT_TOKENS, OI_PROMPT_TOKENS),
    "output_tokens": (GEN_AI_OUTPUT_TOKENS, OI_COMPLETION_TOKENS),
    "completion_tokens": (GEN_AI_OUTPUT_TOKENS, OI_COMPLETION_TOKENS),
    "tokens": (OI_TOTAL_TOKENS,),
    "token_count": (OI_TOTAL_TOKENS,),
    "cost_usd": (OI_COST_TOTAL,),
    "model": (GEN_AI_REQUEST_MODEL, OI_MODEL),
}
# Run metric keys that are bookkeeping of an importer, not measurements: not exported.
METRIC_SKIP = frozenset({"legacy_summary", "legacy_import"})

RUN_TABLE = (
    (
        "span name",
        "`invoke_agent {agent_slug}` (GenAI agent span; the run id is an attribute, names stay low-cardinality)",
    ),
    ("span kind", "`INTERNAL`"),
    ("trace id", "the root run's: kept from the receiver, else BLAKE2b of the root run id"),
    ("span id", "kept from the receiver (or a 16-hex `span_id` on the run's events), else BLAKE2b of `run_id`"),
    ("parent span", "a delegated run: its parent run's delegation span; else the parent run's span; a root: none"),
    ("start / end", "`started_at` / `ended_at` (µs, exact)"),
    ("status", "`succeeded` → `OK`, `failed` → `ERROR` with the last error message, `canceled` → `UNSET`"),
    (f"`{OI_SPAN_KIND}`", "`AGENT`"),
    (f"`{GEN_AI_OPERATION}`", "`invoke_agent`"),
    (f"`{GEN_AI_AGENT_NAME}`", "`agent_slug`"),
    (f"`{M_RUN_ID}`, `{M_PARENT_RUN_ID}`, `{M_STATUS}`", "`run_id`, `parent_run_id`, `status`"),
    (f"`{OI_TAGS}`", "`tags`"),
    ("`running` runs", "not exported until they end"),
)

METRIC_TABLE = tuple(
    [(f"`{name}`", ", ".join(f"`{a}`" for a in attrs)) for name, attrs in METRIC_ATTRIBUTES.items()]
    + [("any other number", f"`{M_METRIC_PREFIX}<name>`")]
)

MCP_TABLE = (
    ("span name", f"`{MCP_SPAN_NAME}` (MCP client span)"),
    ("span kind", "`CLIENT`"),
    ("span id", "the event's `span_id` when it is a 16-hex OTel id, else BLAKE2b of `event_id`"),
    ("parent span", "the span named by `parent_span_id` when exported, else the run's span"),
    ("start / end", "`ts` / `ts + latency_ms` (µs)"),
    ("status", "payload `status` `error`/`failed` or level `error` → `ERROR` with payload `error`; else `OK`"),
    (f"`{MCP_METHOD}`", f"`{MCP_TOOLS_CALL}`"),
    (f"`{GEN_AI_OPERATION}`", "`execute_tool`"),
    (f"`{GEN_AI_TOOL_NAME}`, `{OI_TOOL_NAME}`", "payload `tool`"),
    (f"`{OI_SPAN_KIND}`", "`TOOL`"),
    (f"`{M_SERVER_ID}`", "payload `server_id` (no convention names a logical MCP server)"),
    (f"`{NETWORK_TRANSPORT}`", "payload `transport`: " + ", ".join(f"`{k}`→`{v}`" for k, v in TRANSPORT_OUT.items())),
    (f"`{GEN_AI_TOOL_ARGS}`, `{OI_TOOL_PARAMETERS}`", "payload `arguments` as JSON text"),
    (f"`{M_LATENCY}`", "payload `latency_ms`"),
    (f"`{ERROR_TYPE}`", "payload `error_type`, else `tool_error` (on errors only)"),
    (f"`{M_EVENT_ID}`", "`event_id`"),
)

DELEGATION_TABLE = (
    ("span name", f"`{DELEGATION_SPAN_NAME}`"),
    ("which events", "a `delegation` event whose payload names the sub-run (`run_id`) or the task (`task_id` + `sag`)"),
    ("span kind", "`INTERNAL`"),
    ("span id", "BLAKE2b of the start event's `event_id`"),
    ("end", "the next `delegation` event of the same `task_id` (complete/failure), else the sub-run's end"),
    ("status", "the closing event at level `error` or with payload `error` → `ERROR`; closed otherwise → `OK`"),
    (f"`{OI_SPAN_KIND}`", "`CHAIN`"),
    (f"`{M_TASK_ID}`, `{M_DELEGATE}`, `{M_DELEGATE_RUN}`", "payload `task_id`, `sag`, `run_id`"),
    ("the sub-run", "its span is a child of this span, in the same trace"),
)

EVENT_TABLE = (
    ("`metric`", "attributes of the run's span (table above; the last sample of a name wins), no span event"),
    ("`cost`", "its `input_tokens`/`output_tokens` (summed) and `model` as run attributes, and a span event"),
    ("`log`, `artifact`, other types", "a span event on the run's span (or on the span its `span_id` names)"),
    ("span event name", "the event type (the original name for events that came in through the receiver)"),
    ("span event time", "`ts` (µs)"),
    (f"`{M_EVENT_ID}`, `{M_LEVEL}`, `{M_MESSAGE}`", "`event_id`, `level`, `msg`"),
    (f"`{M_PAYLOAD}`", "`payload` as JSON text"),
    (f"`{M_ARTIFACT}`, `{M_CONTRACT_ID}`, `{M_CONTRACT_VERSION}`", "`artifact_uri`, `contract_id`, `contract_version`"),
    ("resource", f"`{SERVICE_NAME}` = `magsag`, `{OI_PROJECT}` = `--project` (default `magsag`)"),
)

# ------------------------------------------------------------------ OTLP -> store

TOOL_OPERATIONS = frozenset({"execute_tool"})
LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings", "completion"})
TOOL_KINDS = frozenset({"TOOL"})
LLM_KINDS = frozenset({"LLM", "EMBEDDING"})
AGENT_NAME_ATTRS = (M_AGENT, GEN_AI_AGENT_NAME, OI_AGENT_NAME)
TOOL_NAME_ATTRS = (GEN_AI_TOOL_NAME, OI_TOOL_NAME)
TOOL_ARGS_ATTRS = (GEN_AI_TOOL_ARGS, OI_TOOL_PARAMETERS, OI_INPUT_VALUE)
SERVER_ATTRS = (M_SERVER_ID, SERVER_ADDRESS)
MODEL_ATTRS = (GEN_AI_RESPONSE_MODEL, GEN_AI_REQUEST_MODEL, OI_MODEL)
# attribute -> metric name in the store (run metrics and metric events of LLM spans)
USAGE_IN: dict[str, str] = {
    GEN_AI_INPUT_TOKENS: "input_tokens",
    OI_PROMPT_TOKENS: "input_tokens",
    GEN_AI_OUTPUT_TOKENS: "output_tokens",
    OI_COMPLETION_TOKENS: "output_tokens",
    OI_TOTAL_TOKENS: "tokens",
    OI_COST_TOTAL: "cost_usd",
}
RUN_ID_PREFIX = "otel-"
# OTLP severity numbers (1..24) -> store levels
SEVERITY_LEVELS = ((5, "debug"), (9, "debug"), (13, "info"), (17, "warning"), (21, "error"), (25, "critical"))
OTLP_LEVELS_BY_TEXT = {"trace": "debug", "fatal": "critical", "warn": "warning"}

SPAN_IN_TABLE = (
    ("a span with `magsag.run_id`, or a root span", "a run (and a `log` event holding the span)"),
    (
        "its run id",
        f"`{M_RUN_ID}`, else `{RUN_ID_PREFIX}<trace_id>` for the trace's root run",
    ),
    (
        "a child span's run",
        f"the nearest ancestor run span in the same request, else the trace's root run (set `{M_RUN_ID}` on spans"
        " of nested runs that are sent in separate requests)",
    ),
    ("a run span's parent run", f"`{M_PARENT_RUN_ID}`, else the run of its parent span (as above)"),
    (
        "a tool span",
        f"`{OI_SPAN_KIND}` `TOOL`, `{GEN_AI_OPERATION}` `execute_tool` or `{MCP_METHOD}` set → an `mcp.call` event",
    ),
    (
        "an LLM span",
        f"`{OI_SPAN_KIND}` `LLM`/`EMBEDDING` or `{GEN_AI_OPERATION}` chat/text_completion/generate_content/embeddings"
        " → a `log` event holding the span, plus one `metric` event per usage figure",
    ),
    ("any other span", "a `log` event holding the span (msg = span name)"),
    ("span events", "`log` events on the span (`exception` → level `error`, msg from `exception.message`)"),
    ("`trace_id` / `span_id` / `parent_span_id`", "kept: payload `otel.trace_id`, columns `span_id`/`parent_span_id`"),
    ("span start", "the event's `ts` (µs; nanoseconds below a µs are dropped)"),
    ("span end, name, kind, status, attributes", "payload `otel` (so a re-export gives the same span back)"),
    ("event ids", "derived from trace id + span id (+ event index): a resent batch adds nothing"),
)

RUN_IN_TABLE = (
    ("`agent_slug`", f"`{M_AGENT}`, `{GEN_AI_AGENT_NAME}`, `{OI_AGENT_NAME}`, resource `{SERVICE_NAME}`, else `otel`"),
    ("`parent_run_id`", "the run of the parent span, when the span has a parent"),
    ("`status`", f"`{M_STATUS}` if set, else span status `ERROR` → `failed`, otherwise `succeeded`"),
    ("`started_at` / `ended_at`", "span start / end (µs)"),
    ("`tags`", f"`{OI_TAGS}`"),
    (
        "`metrics`",
        ", ".join(f"`{a}` → `{m}`" for a, m in USAGE_IN.items())
        + ", model from "
        + ", ".join(f"`{a}`" for a in MODEL_ATTRS),
    ),
)

MCP_IN_TABLE = (
    ("payload `tool`", ", ".join(f"`{a}`" for a in TOOL_NAME_ATTRS) + ", else the span name"),
    ("payload `server_id`", ", ".join(f"`{a}`" for a in SERVER_ATTRS) + ", else resource `service.name`"),
    ("payload `status`", "span status `ERROR` → `error`, else `success`; payload `error` = status message"),
    ("payload `latency_ms`", "span end − start (ms, µs precision)"),
    ("payload `arguments`", ", ".join(f"`{a}`" for a in TOOL_ARGS_ATTRS) + " (JSON text parsed when it is JSON)"),
    ("payload `transport`", f"`{NETWORK_TRANSPORT}`: " + ", ".join(f"`{k}`→`{v}`" for k, v in TRANSPORT_IN.items())),
    ("level", "`error` when the span status is `ERROR`, else `info`"),
)

LOG_IN_TABLE = (
    (
        "run",
        f"`{M_RUN_ID}`, else the run of its `span_id` (request or store), else `{RUN_ID_PREFIX}<trace_id>`,"
        f" else `{RUN_ID_PREFIX}logs-<service.name>`",
    ),
    (
        "`level`",
        "severity number (1–4 trace, 5–8 debug → `debug`; 9–12 `info`; 13–16 `warning`; 17–20 `error`;"
        " 21–24 `critical`), else severity text",
    ),
    ("`msg`", "the body (text, or JSON text of a structured body)"),
    ("`ts`", "`time_unix_nano`, else `observed_time_unix_nano` (µs)"),
    ("`payload`", "`attributes`, and `otel` with trace/span ids, severity and resource"),
    ("event id", "derived from the whole record: a resent batch adds nothing"),
)

RECEIVER_TABLE = (
    (
        "`POST /v1/traces`",
        "`ExportTraceServiceRequest`: protobuf (`application/x-protobuf`) or JSON (`application/json`)",
    ),
    ("`POST /v1/logs`", "`ExportLogsServiceRequest`, same encodings"),
    ("`Content-Encoding: gzip`", "accepted (the size limit applies to the body before and after inflating)"),
    ("`MAGSAG_SERVE_TOKEN`", "when set, `Authorization: Bearer <token>` is required (401 otherwise)"),
    ("`MAGSAG_OTEL_MAX_BODY_BYTES`", "largest body accepted, default 16 MiB (413 above)"),
    ("malformed body", "400 with a one-line reason; nothing is written"),
    (
        "some spans/records refused",
        "200 with `partial_success` (`rejected_spans`/`rejected_log_records`, `error_message`)",
    ),
    ("response", "the same encoding as the request"),
)

TABLES = {
    "run": ("Run → span", ("store", "OpenTelemetry"), RUN_TABLE),
    "metric": ("Metrics → run span attributes", ("metric name", "attributes"), METRIC_TABLE),
    "mcp": ("`mcp.call` event → tool span", ("OpenTelemetry", "from"), MCP_TABLE),
    "delegation": ("`delegation` events → delegation span", ("OpenTelemetry", "from"), DELEGATION_TABLE),
    "event": ("Other events → span events", ("store", "OpenTelemetry"), EVENT_TABLE),
    "span_in": ("Spans → runs and events", ("OpenTelemetry", "store"), SPAN_IN_TABLE),
    "run_in": ("Run span → run record", ("run field", "from"), RUN_IN_TABLE),
    "mcp_in": ("Tool span → `mcp.call` payload", ("store", "from"), MCP_IN_TABLE),
    "log_in": ("Log records → `log` events", ("store", "from"), LOG_IN_TABLE),
    "receiver": ("Receiver", ("what", "behaviour"), RECEIVER_TABLE),
}
