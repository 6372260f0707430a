"""The tiering job: complete UTC days older than the hot window move to the lake, exactly once.

Modules: ``job`` (``run_tier``: lock, recover, plan, claim/commit per day, settle),
``commit`` (one claim's resumable work: export, write, publish, mark; then deletes),
``report`` (what a job reports and its progress hooks). The store's side is the
``TierSource`` protocol in :mod:`magsag.backends.tiering`.
"""
