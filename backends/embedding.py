"""Embeddings of events: the pluggable embedder and the exact text each event contributes.

The embedder turns a list of strings into L2-normalised ``float32`` vectors of one fixed
dimension. The default, ``wordllama``, is a static 256-dimension model shipped inside the
``wordllama`` wheel (no network, no GPU; loaded from the package folder with downloads
disabled). ``MAGSAG_STORAGE_EMBEDDER`` selects another one:

* ``wordllama`` (default), ``wordllama:64`` (the same model truncated to 64 dimensions);
* the name of an entry point in the ``magsag.storage.embedders`` group;
* a dotted path ``package.module:attr`` (or ``package.module.attr``) to a callable taking a
  list of strings and returning vectors, to a class whose instances are such callables, or
  to an object with ``embed(texts)`` (and optionally ``model``/``dim``).

Every store records the model name and dimension beside its vectors
(:class:`EmbedderInfo`); vectors of two models are never mixed: a mismatch raises
:class:`EmbeddingMismatch` naming both.

What is embedded (:func:`event_text`): ``"<type>: <msg>"`` followed by the salient payload
fields :data:`SALIENT_FIELDS` (tool, error text, status, ...), ``key: value`` each, text
values only, each cut at 200 characters, the whole cut at 1,000 characters.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from magsag.backends import jsontext
from magsag.backends.errors import ConfigError

ENV = "MAGSAG_STORAGE_EMBEDDER"
ENTRY_POINT_GROUP = "magsag.storage.embedders"
DEFAULT = "wordllama"
# Payload keys whose values say what an event is about (error text, tool, status), in order.
SALIENT_FIELDS = (
    "tool",
    "tool_name",
    "server",
    "method",
    "status",
    "status_code",
    "error_type",
    "error",
    "error_message",
    "exception",
    "reason",
    "detail",
)
_FIELD_CHARS = 200
_TEXT_CHARS = 1000


class EmbeddingMismatch(ConfigError):
    """Stored vectors were made by another model or dimension than the configured embedder."""


class EmbedderUnavailable(ConfigError):
    """The configured embedder cannot be loaded (package missing, bad path)."""


@dataclass(frozen=True)
class EmbedderInfo:
    """What is recorded beside every stored vector."""

    model: str
    dim: int

    def check(self, stored: EmbedderInfo | None, where: str) -> None:
        """Raise :class:`EmbeddingMismatch` if ``stored`` (vectors already in ``where``) differ."""
        if stored is None or stored == self:
            return
        raise EmbeddingMismatch(
            f"{where} holds vectors of model {stored.model!r} (dim {stored.dim}) but the embedder is "
            f"{self.model!r} (dim {self.dim}); set {ENV} back or re-embed with `magsag data embed --reset`"
        )


def event_text(event_type: str | None, msg: str | None, payload: Any) -> str:
    """The text embedded for one event (see the module doc)."""
    parts = [f"{event_type or 'event'}: {msg or ''}".strip()]
    if isinstance(payload, str):
        try:
            payload = jsontext.loads(payload) if payload and payload != "{}" else None
        except ValueError:
            payload = None
    if isinstance(payload, dict):
        for key in SALIENT_FIELDS:
            value = payload.get(key)
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, (str, int, float)):
                text = str(value).strip()
                if text:
                    parts.append(f"{key}: {text[:_FIELD_CHARS]}")
    return " | ".join(parts)[:_TEXT_CHARS]


class Embedder:
    """A loaded embedder: ``embed(texts)`` gives an ``(n, dim)`` float32 array of unit rows."""

    def __init__(self, info: EmbedderInfo, fn: Callable[[list[str]], Any]):
        self.info = info
        self._fn = fn
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return self.info.model

    @property
    def dim(self) -> int:
        return self.info.dim

    def embed(self, texts: Sequence[str]) -> Any:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:  # models are not all thread-safe; embedding is CPU-bound anyway
            raw = self._fn(list(texts))
        vecs = np.asarray(raw, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape != (len(texts), self.dim):
            raise ConfigError(
                f"embedder {self.model!r} returned shape {tuple(vecs.shape)} for {len(texts)} texts; "
                f"expected ({len(texts)}, {self.dim})"
            )
        return normalize(vecs)


def normalize(vecs: Any) -> Any:
    import numpy as np

    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vecs / norms).astype(np.float32, copy=False)


def _wordllama(dim: int | None) -> Embedder:
    try:
        import wordllama
    except ImportError:
        raise EmbedderUnavailable(
            "the default embedder needs the wordllama package: pip install 'magsag-storage[semantic]'"
        ) from None
    from pathlib import Path

    kwargs: dict[str, Any] = {"cache_dir": Path(wordllama.__file__).parent, "disable_download": True}
    if dim is not None:
        kwargs["trunc_dim"] = dim
    try:
        model = wordllama.WordLlama.load(**kwargs)
    except Exception as exc:
        raise EmbedderUnavailable(f"cannot load the wordllama model offline: {exc}") from None
    width = int(dim or model.embedding.shape[1])
    name = "wordllama/l2_supercat_256" + (f"@{width}" if dim else "")
    return Embedder(EmbedderInfo(name, width), lambda texts: model.embed(texts, norm=True))


def _resolve(spec: str) -> Any:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == spec:
            return ep.load()
    module, sep, attr = spec.partition(":")
    if not sep:
        module, _, attr = spec.rpartition(".")
    if not module or not attr:
        raise EmbedderUnavailable(
            f"{ENV}={spec!r}: not 'wordllama', an entry point of {ENTRY_POINT_GROUP}, or a dotted path module:attr"
        )
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise EmbedderUnavailable(f"{ENV}={spec!r}: cannot import it ({exc})") from None
    return obj


def _custom(spec: str) -> Embedder:
    obj = _resolve(spec)
    if isinstance(obj, type):
        obj = obj()
    fn = getattr(obj, "embed", None) or obj
    if not callable(fn):
        raise EmbedderUnavailable(f"{ENV}={spec!r} is neither callable nor has an embed() method")
    model = str(getattr(obj, "model", None) or getattr(obj, "model_name", None) or spec)
    dim = getattr(obj, "dim", None) or getattr(obj, "dimension", None)
    if not dim:
        import numpy as np

        probe = np.asarray(fn(["dimension probe"]), dtype=np.float32)
        if probe.ndim != 2 or probe.shape[0] != 1:
            raise EmbedderUnavailable(f"{ENV}={spec!r}: embedding one text returned shape {probe.shape}")
        dim = probe.shape[1]
    return Embedder(EmbedderInfo(model, int(dim)), fn)


_cache: dict[str, Embedder] = {}
_cache_lock = threading.Lock()


def embedder_spec(spec: str | None = None) -> str:
    return (spec or os.environ.get(ENV) or DEFAULT).strip()


def load_embedder(spec: str | None = None) -> Embedder:
    """The embedder ``spec`` (default: ``MAGSAG_STORAGE_EMBEDDER``, else wordllama), loaded once."""
    spec = embedder_spec(spec)
    with _cache_lock:
        found = _cache.get(spec)
        if found is not None:
            return found
        if spec == DEFAULT:
            emb = _wordllama(None)
        elif spec.startswith(DEFAULT + ":") and spec.split(":", 1)[1].isdigit():
            emb = _wordllama(int(spec.split(":", 1)[1]))
        else:
            emb = _custom(spec)
        _cache[spec] = emb
        return emb
