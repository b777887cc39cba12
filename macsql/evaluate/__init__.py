"""Evaluation: benchmark loaders, the one result comparator, metrics, the runner and reports."""
