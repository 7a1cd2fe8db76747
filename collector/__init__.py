"""Collector: receives forwarded batches, deduplicates, stores, baselines TTPHashes (issue 5)."""
