"""The clusterer's first copies of dedupe keys (aggregator/cluster/copies.py)."""

from __future__ import annotations

import random

import pytest

from aggregator.cluster import copies, snapshot
from aggregator.cluster.copies import FirstCopies


@pytest.mark.parametrize("fresh_keys", [0, 5, 8192])
def test_first_copies_answer_as_a_dict_would(
    fresh_keys: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether or not keys were merged into the sorted array, removed and added again."""
    monkeypatch.setattr(copies, "FRESH_KEYS", fresh_keys)
    rng = random.Random(7)
    held = FirstCopies()
    expected: dict[int, tuple[str, str]] = {}
    keys = [rng.getrandbits(64) for _ in range(60)]  # above 2**63 too
    for n in range(2000):
        key = rng.choice(keys)
        action = rng.random()
        if action < 0.5 and key not in expected:
            held.add(key, f"doc{n}", f"story{n % 9}")
            expected[key] = (f"doc{n}", f"story{n % 9}")
        elif action < 0.7 and key in expected:
            held.move(key, f"story{n}")
            expected[key] = (expected[key][0], f"story{n}")
        elif action < 0.9:
            held.remove(key)
            expected.pop(key, None)
        assert held.get(key) == expected.get(key)
        assert (key in held) == (key in expected)
        assert len(held) == len(expected)
    assert {k: held.get(k) for k in keys} == {k: expected.get(k) for k in keys}


def test_first_copies_read_back_as_they_were(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copies, "FRESH_KEYS", 3)
    held = FirstCopies()
    for n in range(10):
        held.add(2**63 + n, str(n), "s")
    held.remove(2**63 + 2)
    kept = snapshot.Memory()
    out = snapshot.Writer(kept.put)
    held.save(out)
    again = FirstCopies()
    again.load(kept.reader(out.finish()))
    assert [again.get(2**63 + n) for n in range(10)] == [held.get(2**63 + n) for n in range(10)]
    assert again.get(2**63 + 2) is None and len(again) == 9
