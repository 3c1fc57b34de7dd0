"""Entry vectors computed where the entry is stored: by the worker that polled it.

Embedding is the costliest step per entry (about 36 a second on two cores), so it
runs on every worker, right after a poll's entries are stored, and the vector is
kept with its entry. The leader reads stored vectors and computes only those a
worker could not (an entry stored by an older version, or by a worker that died
in between). How vectors are stored is defined here once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from aggregator.cluster import embedding
from aggregator.store import Store

log = logging.getLogger(__name__)

VECTOR_DTYPE = np.float16  # how embeddings are stored: 768 bytes for 384 dimensions
# Vectors stored per transaction at ingest: a worker that dies mid-way leaves
# at most this many for the leader to compute.
STORE_EVERY = 64


def encode_vector(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=VECTOR_DTYPE).tobytes()


def decode_vector(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=VECTOR_DTYPE).astype(np.float32)


def decode_vectors(raws: Sequence[bytes]) -> np.ndarray:
    """Many stored vectors as one (n, 384) float32 matrix."""
    if not raws:
        return np.zeros((0, embedding.DIM), dtype=np.float32)
    joined = np.frombuffer(b"".join(raws), dtype=VECTOR_DTYPE)
    return joined.reshape(len(raws), -1).astype(np.float32)


def embed_stored(
    store: Store, entry_ids: Sequence[int], *, stopped: Callable[[], bool] = lambda: False
) -> int:
    """Compute and store the vectors of entries just stored; how many were stored.

    Entries clustered or given a vector meanwhile are skipped, and a vector is
    never written over another one (see `Store.fill_embeddings`). Stops between
    batches once `stopped()`: the leader computes what is left.
    """
    stored = 0
    for start in range(0, len(entry_ids), STORE_EVERY):
        if stopped():
            break
        docs = store.docs_to_embed(entry_ids[start : start + STORE_EVERY])
        if not docs:
            continue
        vectors = embedding.embed(docs)
        encoded = {doc.id: encode_vector(v) for doc, v in zip(docs, vectors, strict=True)}
        stored += store.fill_embeddings(encoded)
    return stored
