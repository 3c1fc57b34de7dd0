"""Feed aggregation: poll, dedupe, cluster into events, publish timelines."""
