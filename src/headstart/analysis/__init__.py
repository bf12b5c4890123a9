"""Measuring before training: layer-wise probes, transferability scores, ranking, the advisor, the LR finder."""
