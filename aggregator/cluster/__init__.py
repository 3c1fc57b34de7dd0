"""The cluster stage: which story each stored report belongs to, decided online.

`StoryAssigner` takes reports in arrival order and returns an `Assignment` for
each; `features` makes TF-IDF vectors and name keys, `stories` keeps the live
stories and the indexes that find them (`scan` finds a batch's nearest stories by
embedding at once), `decision` holds the learned pair model,
`events` groups a storyline's reports into events, `storylines` threads stories
into storylines over weeks, `embedding` wraps the optional multilingual model,
`replay` rebuilds the leader's clusterer from the store, and `snapshot` saves and
reads its state so that a new leader need not replay the whole window.
"""

from aggregator.cluster.assigner import METHODS, StoryAssigner, Tuning
from aggregator.cluster.decision import load_model
from aggregator.cluster.features import FeatureWeights


def recommended_threshold(method: str) -> float:
    """The join probability the shipped model of `method` was chosen with."""
    return load_model(method).threshold


# Method -> join probability its shipped model recommends (what settings should default to).
RECOMMENDED_THRESHOLDS = {method: recommended_threshold(method) for method in METHODS}

__all__ = [
    "RECOMMENDED_THRESHOLDS",
    "FeatureWeights",
    "StoryAssigner",
    "Tuning",
    "recommended_threshold",
]
