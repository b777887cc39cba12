"""Evaluation: benchmark loaders, metrics, the runner and reports (the result comparator is the core's, macsql/compare.py)."""
