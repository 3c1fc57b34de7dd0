"""Which stories each configured timeline holds, and the rule it collected them by.

Deciding whether a story matches is `aggregator.timelines`' job; these queries
store the answers. A timeline collected under another rule than the configured
one is collected again in full (`replace`), so narrowing a rule drops stories and
widening it finds old ones.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from sqlmodel import Session, col, delete, select

from aggregator.store.models import Story, TimelineRule, TimelineStory

_CHUNK = 1000  # ids per IN (...): well under every database's parameter limit


def story_ids(session: Session, timeline: str) -> set[int]:
    rows = session.exec(select(TimelineStory.story_id).where(TimelineStory.timeline == timeline))
    return set(rows.all())


def rules(session: Session) -> dict[str, str]:
    """The rule each timeline's stories were collected by, by timeline name."""
    return {row.timeline: row.rule for row in session.exec(select(TimelineRule)).all()}


def update(
    session: Session, timeline: str, matched: Iterable[int], unmatched: Iterable[int]
) -> bool:
    """Add the matched stories and drop the unmatched ones; True if that changed anything.

    The caller commits.
    """
    matched, unmatched = set(matched), set(unmatched)
    if not matched and not unmatched:
        return False
    known = story_ids(session, timeline)
    added = _existing(session, set(matched) - known)
    dropped = set(unmatched) & known
    for story_id in sorted(added):
        session.add(TimelineStory(timeline=timeline, story_id=story_id))
    if dropped:
        session.exec(
            delete(TimelineStory).where(
                col(TimelineStory.timeline) == timeline,
                col(TimelineStory.story_id).in_(sorted(dropped)),
            )
        )
    return bool(added or dropped)


def replace(session: Session, timeline: str, rule: str, ids: Collection[int]) -> None:
    """The timeline holds exactly these stories, collected by `rule`. The caller commits."""
    session.exec(delete(TimelineStory).where(col(TimelineStory.timeline) == timeline))
    for story_id in sorted(_existing(session, ids)):
        session.add(TimelineStory(timeline=timeline, story_id=story_id))
    row = session.get(TimelineRule, timeline)
    if row is None:
        session.add(TimelineRule(timeline=timeline, rule=rule))
    else:
        row.rule = rule


def forget_others(session: Session, kept: Collection[str]) -> int:
    """Drop the stories and rules of timelines no longer configured; how many timelines.

    A timeline configured again later is then collected afresh. The caller commits.
    """
    gone = {name for name in rules(session) if name not in kept}
    gone |= set(session.exec(select(TimelineStory.timeline).distinct()).all()) - set(kept)
    if gone:
        session.exec(delete(TimelineStory).where(col(TimelineStory.timeline).in_(sorted(gone))))
        session.exec(delete(TimelineRule).where(col(TimelineRule.timeline).in_(sorted(gone))))
    return len(gone)


def _existing(session: Session, ids: Collection[int]) -> set[int]:
    """Those of the stories still stored: a merge or retention may have removed some
    since they were matched."""
    wanted, found = sorted(ids), set[int]()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        found.update(
            i
            for i in session.exec(select(Story.id).where(col(Story.id).in_(chunk)))
            if i is not None
        )
    return found
