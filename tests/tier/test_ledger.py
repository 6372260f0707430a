"""The ledger's state machine on its own (``backends/tiering/ledger.py``): every transition
from every state, without a store. The same decisions serve SQLite and PostgreSQL; the
contract suite (``test_source_contract.py``) runs them through both stores' SQL.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from magsag.backends.errors import StorageError, ValidationError
from magsag.backends.tiering.ledger import (
    DELETED,
    batch_id_for,
    check_files,
    check_id,
    check_mode,
    complete_days_before,
    deleted,
    exported,
    finished,
    with_info,
    worth_claiming,
)
from magsag.backends.tiering.protocol import CLAIMED, DONE, EXPORTED, Claim

AT = datetime(2026, 3, 10, 1, tzinfo=UTC)
FILES = {"events": "e.parquet", "runs": "r.parquet"}


def claim(state: str = CLAIMED, mode: str = "move", **kw: Any) -> Claim:
    return Claim("t-1", "lake", date(2026, 3, 7), mode, state, dict(FILES), **kw)


def test_mark_exported_only_moves_a_claimed_claim_forward() -> None:
    new = exported(claim(info={"a": 1}), {"events": 5, "runs": 2}, {"b": 2})
    assert new is not None
    assert (new.state, new.event_rows, new.run_rows, new.info) == (EXPORTED, 5, 2, {"a": 1, "b": 2})
    for state in (EXPORTED, DONE):  # a repeat with the same counts: no change, never backwards
        assert exported(claim(state, event_rows=5, run_rows=2), {"events": 5, "runs": 2}, None) is None
        with pytest.raises(StorageError, match=f"is {state}: it was exported with 5 events"):
            exported(claim(state, event_rows=5, run_rows=2), {"events": 4, "runs": 2}, None)


@pytest.mark.parametrize(
    ("rows", "error", "needle"),
    [
        ({"events": 5}, StorageError, "no row count for planned runs"),
        ({"events": 5, "runs": 1, "logs": 0}, StorageError, "logs not planned"),
        ({"events": -1, "runs": 0}, ValidationError, "whole number"),
        ({"events": 1.5, "runs": 0}, ValidationError, "whole number"),
        ({"events": True, "runs": 0}, ValidationError, "whole number"),
    ],
)
def test_mark_exported_needs_every_planned_file(rows: dict[str, Any], error: type, needle: str) -> None:
    with pytest.raises(error, match=needle):
        exported(claim(), rows, None)


def test_a_claim_without_planned_files_is_marked_with_no_counts() -> None:
    new = exported(Claim("t-1", "lake", date(2026, 3, 7), "move", CLAIMED, {}), {}, None)
    assert new is not None and (new.event_rows, new.run_rows) == (0, 0)


def test_finish_only_from_exported_and_once() -> None:
    with pytest.raises(StorageError, match="is claimed: not exported yet"):
        finished(claim(), AT, None)
    with pytest.raises(StorageError, match="not deleted yet"):
        finished(claim(EXPORTED), AT, None)  # a move finishes after its delete was recorded
    moved = finished(claim(EXPORTED, info={DELETED: {"events": 3, "runs": 1}}), AT, {"result": 1})
    copied = finished(claim(EXPORTED, mode="copy"), AT, None)
    assert moved is not None and copied is not None
    assert (moved.state, moved.finished_at, moved.info["result"]) == (DONE, AT, 1)
    assert copied.state == DONE
    assert finished(claim(DONE, finished_at=AT), datetime(2027, 1, 1, tzinfo=UTC), {"result": 2}) is None


def test_deletes_are_recorded_for_exported_moves_only() -> None:
    first = deleted(claim(EXPORTED), {"events": 3, "runs": 1})
    assert first is not None and first.info[DELETED] == {"events": 3, "runs": 1}
    again = deleted(first, {"events": 0, "runs": 0})  # a rerun adds what it deleted (nothing)
    assert again is not None and again.info[DELETED] == {"events": 3, "runs": 1}
    assert deleted(claim(DONE), {"events": 0}) is None
    with pytest.raises(StorageError, match="is a copy"):
        deleted(claim(EXPORTED, mode="copy"), {"events": 1})
    with pytest.raises(StorageError, match="is claimed: not exported"):
        deleted(claim(), {"events": 1})


def test_the_ledger_keys_are_not_the_callers() -> None:
    assert with_info(claim(), {}) is None
    new = with_info(claim(info={"a": 1}), {"a": 2, "b": 3})
    assert new is not None and new.info == {"a": 2, "b": 3} and new.state == CLAIMED
    with pytest.raises(ValidationError, match="belongs to the ledger"):
        with_info(claim(), {DELETED: {}})
    with pytest.raises(ValidationError, match="belongs to the ledger"):
        exported(claim(), {"events": 0, "runs": 0}, {DELETED: 1})


def test_ids_modes_files_and_days() -> None:
    assert check_id("tier-20260310T000000Z-abc123-20260307") == "tier-20260310T000000Z-abc123-20260307"
    assert batch_id_for("tier-x", date(2026, 3, 7)) == "tier-x-20260307"
    for bad in ("", "a/b", "a b", "x" * 81, 7, None, "é"):
        with pytest.raises(ValidationError, match="invalid tier batch id"):
            check_id(bad)
    with pytest.raises(ValidationError, match="tier mode"):
        check_mode("sync")
    assert check_files(FILES) == FILES and check_files({}) == {}
    for bad_files in ({"events": ""}, {"logs": "x"}, {"runs": 3}):
        with pytest.raises(ValidationError, match="planned tier files"):
            check_files(bad_files)  # type: ignore[arg-type]
    assert complete_days_before(datetime(2026, 3, 9, 17, 5, tzinfo=UTC)) == complete_days_before(
        datetime(2026, 3, 9, tzinfo=UTC)
    )
    assert worth_claiming(1, []) and worth_claiming(0, ["r"]) and not worth_claiming(0, [])
