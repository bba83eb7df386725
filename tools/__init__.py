"""Technician and bench command-line tools behind the single ``knute`` command."""
