"""The distribution installs one import root, ``magsag``, and nothing else."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# One worker builds the wheel for both tests: two builds at once in the same tree (build/,
# *.egg-info) would mix their files.
pytestmark = pytest.mark.xdist_group("packaging")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("magsag_storage-*.whl")
    return whl


def test_wheel_holds_every_source_module_under_magsag(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"magsag"}
    expected = set()
    for folder, prefix in (("magsag", "magsag"), ("backends", "magsag/backends"), ("lakehouse", "magsag/lakehouse")):
        for path in (ROOT / folder).rglob("*.py"):
            expected.add(f"{prefix}/{path.relative_to(ROOT / folder).as_posix()}")
    assert expected - names == set(), "modules missing from the wheel: add their package to pyproject.toml"


def test_installed_wheel_exposes_only_magsag(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # pip of this interpreter installs into the new environment's site-packages.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    # (--target also puts the console script in site/bin; a real install puts it in the venv's bin)
    entries = {p.name for p in site.iterdir() if not p.name.startswith(("_", ".")) and p.name != "bin"}
    assert {e for e in entries if not e.endswith(".dist-info")} == {"magsag"}, entries
    for old in ("backends", "lakehouse"):
        r = subprocess.run([py, "-c", f"import {old}"], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr
    r = subprocess.run(
        [py, "-c", "import magsag.backends.errors, magsag.lakehouse.layout; print(magsag.backends.errors.__name__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "magsag.backends.errors"
