"""Sigma process-creation rules evaluated on the events a collector stores."""
