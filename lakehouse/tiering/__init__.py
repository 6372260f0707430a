"""The tiering job: complete UTC days older than the hot window move to the lake, exactly once.

Modules: ``job`` (``run_tier``: lock, recover, plan, claim and commit per day, settle),
``commit`` (a claim's resumable commit: export, write, publish, mark exported), ``settle``
(the deletes of every committed move claim, then each claim finished), ``destination``
(the ledger's name of a destination, orphan placeholder runs it already holds),
``report`` (what a job reports and its progress hooks), ``vacuum_guard`` (retention that
keeps days not archived yet). The store's side is the ``TierSource`` protocol and the
ledger's state machine in :mod:`magsag.backends.tiering`.
"""
