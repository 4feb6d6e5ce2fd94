"""Helpers of ``bench/cluster_bench.py``: the namespace, the member processes, the trials."""
