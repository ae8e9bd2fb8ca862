"""Corral's benchmark suite: `python -m bench` (or `make bench`) prints a table."""
