"""The cluster stage: which story each stored report belongs to, decided online.

`StoryAssigner` takes reports in arrival order and returns an `Assignment` for
each; `features` makes TF-IDF vectors, `stories` keeps the live stories and their
term index, `embedding` wraps the optional multilingual model.
"""

from aggregator.cluster.assigner import RECOMMENDED_THRESHOLDS, StoryAssigner, Tuning
from aggregator.cluster.features import FeatureWeights

__all__ = ["RECOMMENDED_THRESHOLDS", "FeatureWeights", "StoryAssigner", "Tuning"]
