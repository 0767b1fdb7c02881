"""Stage 3, *fix*: edit only the decision layer: the paper's edit, its baselines, refits, the comparison."""
