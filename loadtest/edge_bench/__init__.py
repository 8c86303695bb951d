"""Helpers of loadtest/bench_edge.py: the slow origin and the load clients, each run as a process."""
