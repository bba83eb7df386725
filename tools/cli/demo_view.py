"""The demo's live terminal view: counters, the light sculpture, latest readings, alarms.

``o`` stops or restarts the broker, ``q`` quits. Kept apart from tools/cli/demo.py,
which runs the demo's processes; this module only reads their state and renders it.
"""

from __future__ import annotations

import select
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from knute.tools.cli.demo import Demo


def _reading_text(doc: dict[str, Any]) -> str:
    readings = doc.get("readings", {})
    if doc.get("kind") == "water_meter":
        index = readings.get("index", {}).get("value")
        last = (doc.get("profile") or [{}])[-1].get("litres")
        return f"index {index} L, last hour {last} L"
    parts = []
    for name, label in (("pm2_5", "PM2.5"), ("pm10", "PM10"), ("temperature", "T")):
        value = readings.get(name, {}).get("value")
        unit = readings.get(name, {}).get("unit", "")
        parts.append(f"{label} {'-' if value is None else value}{unit}")
    return ", ".join(parts)


def _render(demo: Demo) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    st = demo.gateway_status()
    totals = st.get("totals", {})
    spool = st.get("spool", {})
    fwd = st.get("forwarder", {})
    with demo.seen.lock:
        last = sorted(demo.seen.last.values(), key=lambda d: d.get("received_at", ""),
                      reverse=True)[:12]
        alarms = list(demo.seen.alarms)
        received = len(demo.seen.ids)
    devices = Table(title="latest readings at the backend", expand=True)
    for col in ("device", "kind", "fcnt", "reading", "alarms", "heard by"):
        devices.add_column(col)
    for doc in last:
        devices.add_row(doc["device"], doc["kind"], str(doc["fcnt"]), _reading_text(doc),
                        ", ".join(doc.get("alarms", [])) or "-",
                        str(len(doc.get("receivers", []))))
    counters = Table.grid(padding=(0, 2))
    counters.add_row("broker", "[green]up" if demo.broker.running else "[red]DOWN",
                     "mqtt", str(fwd.get("state", "?")))
    counters.add_row("sent (valid)", str(len(demo.all_expected())), "received", str(received))
    counters.add_row("gateway accepted", str(totals.get("accepted", 0)),
                     "merged duplicates", str(totals.get("merged", 0)))
    counters.add_row("rejected", str(totals.get("rejected", 0)),
                     "forwarded", str(totals.get("forwarded", 0)))
    counters.add_row("spool depth", str(spool.get("depth", 0)),
                     "evicted", str(totals.get("evicted", 0)))
    city = demo.backend.try_summary(timeout=0.3)
    counters.add_row("backend stored", str(city.get("readings", "?")),
                     "alerts open", str(city.get("alerts_open", "?")))
    counters.add_row("web page", demo.backend.url)
    rejected = st.get("rejected", {})
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) or "none"
    sim_h = (time.time() - demo.start_time) * demo.args.speed / 3600
    return Group(
        Panel(counters, title=f"knute demo - {sim_h:.1f} simulated hours - "
              r"\[o] broker outage  \[q] quit"),
        sculpture_panel(demo),
        devices,
        Panel("\n".join(alarms) or "none yet", title="alarms"),
        Panel(f"rejected by reason: {reasons}\n" + "\n".join(demo.events), title="events"),
    )


def sculpture_panel(demo: Demo) -> Any:
    """The sculpture's line: a swatch of the strip's colour and the area index it shows."""
    from rich.panel import Panel
    from rich.text import Text

    from knute.tools.sim.sculpture import BANDS

    sculpture = demo.sculpture
    colour = sculpture.colour() if sculpture else None
    level = sculpture.level if sculpture else None
    line = Text()
    line.append(" " * 40, style=f"on {colour}" if colour else "")
    band = BANDS[level - 1].replace("_", " ") if level else "no index yet"
    line.append(f"  {colour or 'dark'}  area index: {band} (level {level or '-'})")
    return Panel(line, title="light sculpture (display node, simulated strip)")


def live_view(demo: Demo) -> None:
    import termios
    import tty

    from rich.live import Live

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        with Live(_render(demo), refresh_per_second=2, screen=False) as live:
            while True:
                ready, _, _ = select.select([sys.stdin], [], [], 0.5)
                if ready:
                    key = sys.stdin.read(1).lower()
                    if key == "q":
                        break
                    if key == "o":
                        demo.toggle_broker()
                live.update(_render(demo))
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
