#!/usr/bin/env bash
# Run tests with the machine clock faked to several hours and weekdays (libfaketime) to show
# that no result depends on the wall clock (issue 13, item 4; docs/testing.md).
#
#   ops/scripts/clock_proof.sh [pytest args...]     default: the tests that read "now"
#
# S3 cases are deselected (-k "not s3", and the one S3 test not named so): the SeaweedFS server is a Go binary that libfaketime
# does not fake, and it rejects request signatures whose time is skewed from its own clock.
# PostgreSQL runs on the real clock too; the tests never compare against its now().
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
command -v faketime >/dev/null || { echo "faketime not installed (apt-get install -y faketime)" >&2; exit 2; }
if [ "$#" -eq 0 ]; then
  set -- tests/answers/test_clock.py tests/test_cli_hot.py tests/test_docs.py tests/test_durations.py \
    tests/postgres/test_pg_vacuum.py tests/postgres/test_pg_partitions.py tests/postgres/test_pg_search.py \
    tests/postgres/test_pg_ingest.py tests/query/test_lake_access.py tests/query/test_end_to_end.py \
    tests/tier/test_tier_archive.py tests/tier/test_tier_cli.py tests/clickhouse/test_ch_e2e.py \
    tests/serve/test_tail_cli.py
fi
# The faketime wrapper starts the fake clock at that instant (UTC) and lets it run.
# (FAKETIME_DONT_FAKE_MONOTONIC=1 breaks Python's time.sleep with EINVAL: leave it unset.)
export TZ=UTC
TIMES=(
  "2026-12-07 06:20:00"   # Monday early morning (the failure of issue 13)
  "2027-01-03 23:59:40"   # Sunday, seconds before midnight, another year
  "2028-02-29 00:00:20"   # Tuesday, a leap day just after midnight
  "2026-06-13 17:45:00"   # Saturday evening
)
status=0
for t in "${TIMES[@]}"; do
  echo "=== faketime '$t' ($(faketime "$t" date -u '+%A %H:%M UTC'))"
  if ! faketime "$t" "$PY" -m pytest -q -p no:cacheprovider -k "not s3 and not remembered_manifest" "$@" 2>&1 | tail -n 3; then
    status=1
  fi
done
exit $status
