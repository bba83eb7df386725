"""The pure core stays pure: the pipeline, the delivery window and their types
import no I/O module (no SQLite, sockets, MQTT client, spool, registry or
status server), so they are built and tested on values alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IO_MODULES = ("sqlite3", "socket", "select", "ssl", "paho", "serial", "knute.gateway.spool",
              "knute.gateway.registry", "knute.gateway.status", "knute.gateway.forwarder",
              "knute.gateway.daemon", "knute.gateway.registry_watch", "knute.gateway.dbfile")


def test_pipeline_and_delivery_window_import_no_io_module() -> None:
    code = ("import json, sys\n"
            "import knute.gateway.pipeline, knute.gateway.delivery, knute.gateway.model\n"
            "import knute.gateway.pipeline_checks\n"
            "import knute.gateway.link\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    loaded = json.loads(out.stdout)
    assert "knute.gateway.pipeline" in loaded
    assert [m for m in loaded if m in IO_MODULES or m.split(".")[0] in IO_MODULES] == []
