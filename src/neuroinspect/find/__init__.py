"""Stage 1, *find*: counterfactual edits of the penultimate features, neuron rankings, importance."""
