"""ClickHouse for analytics over the lake: load it idempotently, read it as a backend.

- :mod:`~lakehouse.clickhouse.sql` — every statement (DDL, loads, reads), one SQL for both engines
- :mod:`~lakehouse.clickhouse.engines` — chDB (embedded, default) or a server via clickhouse-connect
- :mod:`~lakehouse.clickhouse.schema` — ``magsag data clickhouse init``: create and check the tables
- :mod:`~lakehouse.clickhouse.load` — ``magsag data load clickhouse``: partitions, ledger, verification
- :mod:`~lakehouse.clickhouse.backend` — the read-only ``clickhouse`` StorageBackend

Nothing here imports chdb or clickhouse-connect until an engine is opened.
"""
