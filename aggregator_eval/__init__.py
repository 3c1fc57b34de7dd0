"""Fitting and scoring the clusterer's model files, on labelled data.

`labelled` reads labelled files, `evaluate` scores the dedupe and cluster stages
on them (`aggregator eval`), `training` fits the pair models and `background`
builds the background document frequencies shipped in `aggregator/cluster/`.
The running service never imports this package: it only loads the files made here.
"""
