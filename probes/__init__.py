"""Probing frozen encoders (`repeval.probes`): embeddings, probes, plots."""
