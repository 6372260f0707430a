"""MAGSAG storage layer: hot stores (:mod:`magsag.backends`), the Parquet lakehouse
(:mod:`magsag.lakehouse`), the documented Python API (:mod:`magsag.storage`) and the
``magsag`` CLI (:mod:`magsag.cli`).

One distribution, one import root: ``magsag.backends`` and ``magsag.lakehouse`` are the
repository's top-level ``backends/`` and ``lakehouse/`` folders, mapped by setuptools
``package-dir`` (see pyproject.toml).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("magsag-storage")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
