"""Benchmarks behind ``knute bench NAME``: each prints figures, never asserts on them."""
