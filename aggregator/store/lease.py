"""One worker's hold on the leader lease, as its in-order steps see it.

`leadership.py` keeps the lease row; this keeps the term this worker believes it
holds, so each step can ask "do I lead, and is it the same term as before?" and
fence its writes with that term.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from aggregator.store.database import Store
from aggregator.store.leadership import Term


class Acquired(NamedTuple):
    leading: bool
    new_term: bool  # someone else may have clustered since this worker last led


class LeaderLease:
    def __init__(self, store: Store, owner: str, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.owner = owner
        self.clock = clock
        self.term: Term | None = None

    def acquire(self, lease_s: float) -> Acquired:
        """Take or renew the lease for `lease_s` seconds."""
        known = None if self.term is None else self.term.term
        term = self.store.acquire_leadership(self.owner, known, self.clock(), lease_s=lease_s)
        self.term = term
        if term is None:
            return Acquired(leading=False, new_term=False)
        return Acquired(leading=True, new_term=term.term != known)

    def renew(self) -> bool:
        """Renew the term held; False (and no term) if another worker has taken over."""
        if self.term is None:
            return False
        term = self.store.acquire_leadership(
            self.owner, self.term.term, self.clock(), lease_s=self.term.lease_s
        )
        if term is None or term.term != self.term.term:
            self.term = None
            return False
        return True

    def drop(self) -> None:
        """Forget the term: a fenced write was refused, so someone else leads."""
        self.term = None

    def release(self) -> None:
        """Hand the lease back but remember the term: if nobody takes over meanwhile,
        this worker's next acquisition keeps it and its clusterer need not be rebuilt."""
        if self.term is not None:
            self.store.resign_leadership(self.owner)

    def resign(self) -> None:
        """Hand the lease back so another worker takes over at once."""
        if self.term is not None:
            self.store.resign_leadership(self.owner)
            self.term = None
