"""Hybrid-cloud GPU workload placement engine."""

__version__ = "0.1.0"
