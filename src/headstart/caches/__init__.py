"""Everything computed once and reused: pooled embeddings, decoded images, frozen-boundary activations."""
