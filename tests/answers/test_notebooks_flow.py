"""Issue 13, item 23: the notebooks run in the documented flow — `magsag data demo` and
`magsag data tier` in the project root with the default settings, the notebooks opened
from notebooks/ — and find the data there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.cli_helpers import magsag

ROOT = Path(__file__).resolve().parents[2]


def test_notebooks_run_from_the_notebooks_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)  # the documented flow: demo and tier in the project root, default settings
    assert magsag("data", "demo", "--days", "10", "--runs-per-day", "4", "--json").code == 0
    assert magsag("data", "tier", "--hot-days", "3", "--json").code == 0
    shutil.copytree(ROOT / "notebooks", project / "notebooks")
    monkeypatch.setenv("MAGSAG_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for path in sorted((project / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(project / "notebooks")}}
        )
        client.execute()
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.output_type == "error"], path.name
        printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
        assert f"data from {project}" in printed, path.name
