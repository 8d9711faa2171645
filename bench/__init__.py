"""Benchmarks of the engine against plain asyncio and a plain thread pool.

``python -m bench`` runs them all (``make bench``); see ``bench/README.md``.
"""
