"""Each exported event's vector, written by tiering as the events file's ``embedding`` column.

Semantic search is switched on for a hot store by embedding it once (``magsag data embed``:
the store then records its model). From then on tiering writes events files with an
``embedding`` column (``fixed_size_list<float32>[d]``, the model in the file's metadata, see
:func:`magsag.lakehouse.lakeformat.with_embedding`): the hot store's own vector when it has
one, else the event embedded now by the same embedder, so cold data stays searchable and a
late event tiered before ``embed`` ran still gets its vector. With ``MAGSAG_STORAGE_EMBEDDER=none``,
or a hot store that never embedded, files are written as before.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
from magsag.backends.embedding import Embedder, EmbedderUnavailable, embedder_spec, event_text, load_embedder
from magsag.backends.errors import UnsupportedOperation
from magsag.backends.vectors import VectorStore, vector_store

log = logging.getLogger(__name__)


class EventVectors:
    def __init__(self, embedder: Embedder, store: VectorStore | None):
        self.embedder = embedder
        self.store = store  # None: the hot store's vectors are of another model; embed everything

    @property
    def spec(self) -> tuple[str, int]:
        return self.embedder.model, self.embedder.dim

    @classmethod
    async def open(cls, backend: Any) -> EventVectors | None:
        """The vectors to attach, or None when semantic search is off for this store."""
        if embedder_spec().lower() in ("none", "off", ""):
            return None
        try:
            store = vector_store(backend)
        except UnsupportedOperation:
            return None
        ok, _ = await store.available()
        stored = await store.stored_info() if ok else None
        if stored is None:
            return None
        try:
            embedder = load_embedder()
        except EmbedderUnavailable as exc:
            log.warning("tiering without vectors: %s", exc)
            return None
        return cls(embedder, store if stored == embedder.info else None)

    async def attach(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        """``batch`` with an ``embedding`` column."""
        import numpy as np

        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        ids = table.column("event_id").to_pylist()
        have = await self.store.get(ids) if self.store is not None else {}
        matrix = np.empty((len(ids), self.embedder.dim), dtype=np.float32)
        missing = [i for i, e in enumerate(ids) if e not in have]
        for i, e in enumerate(ids):
            if e in have:
                matrix[i] = have[e]
        if missing:
            types = table.column("type").to_pylist()
            msgs = table.column("msg").to_pylist()
            payloads = table.column("payload").to_pylist()
            matrix[missing] = self.embedder.embed([event_text(types[i], msgs[i], payloads[i]) for i in missing])
        col = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), self.embedder.dim)
        return table.append_column("embedding", col)
