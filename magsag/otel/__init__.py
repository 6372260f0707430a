"""OpenTelemetry both ways: export runs as OTLP traces, receive OTLP spans and logs.

* :func:`magsag.otel.export.export_otel` (``magsag data export otel``): finished runs of
  every tier -> OTLP/HTTP protobuf, deterministic ids, batches, retries, a watermark for
  the continuous mode.
* :mod:`magsag.otel.receiver`: ``POST /v1/traces`` and ``POST /v1/logs`` (protobuf or
  JSON, gzip) -> runs and events, served by ``magsag data serve``.
* :mod:`magsag.otel.mapping`: every name and rule of both directions; docs/otel.md's
  tables are generated from it.
"""
