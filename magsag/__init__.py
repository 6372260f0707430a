"""MAGSAG storage front: the documented Python API (:mod:`magsag.storage`) and the ``magsag`` CLI."""

__version__ = "0.1.0"
