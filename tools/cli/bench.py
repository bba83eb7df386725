"""``knute bench NAME``: benchmarks that print figures (and one JSON object with --json).

Each benchmark is a module (or package) ``tools/bench/<name>`` with ``add_arguments(parser)``
and ``run(args) -> int``, and compares its figures side by side with a baseline
measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from typing import Any

BENCHES = {
    "protocol": "decode+verify on CPython (gateway and pure paths), encode on MicroPython",
    "gateway": "decode+verify, end to end to the broker against bare paho, spool drain, RSS",
    "firmware": "peak heap and allocations per send cycle on the MicroPython unix port",
    "reliability": "fault-injection cases: sent, accepted, delivered, lost, duplicates",
    "city": "several gateway processes on one broker, each with its own fleet (or all fed "
            "by one knute simulate, --load simulate): per-gateway frames/s and CPU against "
            "one gateway alone",
    "leaks": "leak scoreboard on a simulated city: found, false alerts, time to detect, size",
    "plan": "knute plan's simulated uplinks/s on a 45,000-node city against a pairwise baseline",
    "web": "the backend's web page for one district of N meters against an SQL-sum baseline",
    "backend": "the backend's stores side by side: MQTT ingest against bare inserts, bytes per "
               "hourly value, a district's daily balance, the city's night-flow pass",
    "air": "the air index's cost to the backend's ingest (against check-and-store alone), "
           "an area's hour and the air page",
}


class _BenchParser(argparse.ArgumentParser):
    """A benchmark's sub-parser that imports its module when it is used.

    ``knute bench NAME`` runs one benchmark: its module (the reliability one
    alone imports a fault relay, a gateway supervisor and a fuzzer) is loaded
    when this parser parses its arguments or shows its help, so the listing
    and the other benchmarks never import it.
    """

    def __init__(self, *args: Any, bench_module: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bench_module = bench_module

    def _load(self) -> None:
        if self._bench_module:
            module = importlib.import_module(self._bench_module)
            self._bench_module = ""
            module.add_arguments(self)
            self.set_defaults(_bench_run=module.run)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        """Load the benchmark's arguments, then parse."""
        self._load()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        """Load the benchmark's arguments, then describe them."""
        self._load()
        return super().format_usage()

    def format_help(self) -> str:
        """Load the benchmark's arguments, then describe them."""
        self._load()
        return super().format_help()


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """One sub-parser per benchmark module present in this installation (loaded on use)."""
    sub = parser.add_subparsers(dest="bench", required=True, metavar="BENCH",
                                parser_class=_BenchParser)
    for bench, help_text in BENCHES.items():
        module_name = f"knute.tools.bench.{bench}"
        if importlib.util.find_spec(module_name) is None:
            continue
        sub.add_parser(bench, help=help_text, description=help_text, bench_module=module_name)


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark."""
    return int(args._bench_run(args) or 0)
