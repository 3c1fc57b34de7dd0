"""A batch of reports' nearest stories on the embedding shelf, from one matrix product.

Placing a report scans the shelf (`stories.EmbeddingShelf`) for the stories its
language-centred embedding is nearest to: one pass over the whole shelf each,
which the memory it reads makes the largest single cost of a decision. The
leader knows a batch's raw vectors before it places the first of them, and a
centred vector is linear in its raw one: (raw - total / count) / norm, with its
language's running sum `total` and `count` taken after learning the report. So
the shelf's products with the batch's raw vectors come from one matrix product,
and each language's product with its sum is computed once, then kept current by
adding each of its reports' products as they are learned. The norm only scales a
report's scores, so the ranking needs none. Rows the batch has changed (a story
joined, founded or dropped) are computed anew from the shelf as it is. The
candidates found are those of a scan a report, but for cosines within float
rounding of each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aggregator.cluster.embedding import LanguageCentring
from aggregator.cluster.stories import EmbeddingShelf


class ShelfScan:
    """The shelf's products with a batch's raw vectors, and each language's with its sum."""

    def __init__(
        self,
        shelf: EmbeddingShelf,
        centring: LanguageCentring,
        doc_ids: Sequence[str],
        raws: np.ndarray,
    ) -> None:
        self._shelf = shelf
        self._centring = centring
        self._row = {doc_id: i for i, doc_id in enumerate(doc_ids)}
        self._products = shelf.products(np.asarray(raws, np.float32))
        self._totals: dict[str, np.ndarray] = {}  # language -> shelf · its sum (float64)

    def learned(self, doc_id: str, lang: str) -> None:
        """Keep the language's product with its sum current: the centring just learned
        this report."""
        total = self._totals.get(lang)
        if total is None:
            return  # computed when first asked, with this report in it
        i = self._row.get(doc_id)
        if i is None:  # not of this batch: computed again when next asked
            del self._totals[lang]
        else:
            total += self._products[i]

    def nearest(self, doc_id: str, lang: str, raw: np.ndarray, limit: int) -> list[str] | None:
        """The report's nearest stories, as `EmbeddingShelf.nearest` of its centred
        embedding finds them; None for a report not of this batch."""
        i = self._row.get(doc_id)
        if i is None:
            return None
        total, count = self._centring.parts(lang)
        shelf_total = self._totals.get(lang)
        if shelf_total is None:
            shelf_total = self._shelf.product(total.astype(np.float32)).astype(np.float64)
            self._totals[lang] = shelf_total
        scores = self._products[i] - shelf_total / count
        direction = (np.asarray(raw, np.float64) - total / count).astype(np.float32)
        return self._shelf.nearest_by(scores, direction, limit)

    def end(self) -> None:
        self._shelf.end_scan()
