"""``lean_process``: the allocator settings of the bulk CLI jobs take effect (own process)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.tier.helpers import ROOT

PROBE = """
import json
import pyarrow as pa
from magsag.backends.allocator import lean_process
done = lean_process()
print(json.dumps({**done, "pool": pa.default_memory_pool().backend_name}))
"""


def test_lean_process_switches_allocators() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    done = json.loads(out.stdout)
    assert done["pool"] == "system" and done["arrow_system_pool"]
    if sys.platform.startswith("linux"):
        assert done["malloc_arenas"]
