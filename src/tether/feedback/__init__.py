"""Preference feedback: annotator agreement and vote aggregation (the labelling side of RLHF)."""
