"""ClickHouse for analytics over the lake: load it idempotently, read it as a backend.

- :mod:`~magsag.lakehouse.clickhouse.sql` — every statement (DDL, loads, reads), one SQL for both engines
- :mod:`~magsag.lakehouse.clickhouse.engines` — chDB (embedded, default) or a server via clickhouse-connect
- :mod:`~magsag.lakehouse.clickhouse.schema` — ``magsag data clickhouse init``: create and check the tables
- :mod:`~magsag.lakehouse.clickhouse.load` — ``magsag data load clickhouse``: partitions, ledger, verification
- :mod:`~magsag.lakehouse.clickhouse.backend` — the read-only ``clickhouse`` StorageBackend

Nothing here imports chdb or clickhouse-connect until an engine is opened.
"""
