"""Algorithms (registered by name in :mod:`metacpo.algorithms.registry`) and shared pieces
(:mod:`metacpo.algorithms.common`)."""

from metacpo.algorithms.registry import AlgorithmEntry, algorithm_names, get_algorithm, register_algorithm

__all__ = ["AlgorithmEntry", "algorithm_names", "get_algorithm", "register_algorithm"]
