"""The air-quality part of the backend's web page: ``/air`` and ``/api/air``.

The indexes are functions of the stored readings (``backend.air_service``),
so the page computes them from its own store connection: each station's
index for its last closed hour, each area's, and a 48-hour chart per
station (hourly PM2.5 as the index used it, each bar in its hour's band
colour; a withheld hour is grey). HTML with inline SVG and no script, like
the water page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from knute.backend import air_index
from knute.backend.air_index import HOUR_S, level_of
from knute.backend.air_service import AIR, BACK_S, AirIndexes
from knute.backend.config import Config
from knute.backend.store import SqlStore

CHART_HOURS = 48
WITHHELD = "#b6bec8"
REFRESH_S = 60


class AirView:
    """The documents behind ``/air`` and ``/api/air``."""

    def __init__(self, config: Config, store: SqlStore) -> None:
        self.config = config
        self.store = store
        self.indexes = AirIndexes(config, store)

    def _last_closed(self) -> dict[str, int]:
        kinds = self.store.kinds()
        return {d: int(t) - int(t) % HOUR_S - HOUR_S
                for d, t in sorted(self.store.last_heard().items()) if kinds.get(d) == AIR}

    def overview(self, now: float) -> dict[str, Any]:
        """Every station's and area's index for its last closed hour."""
        closed = self._last_closed()
        stations = [self.indexes.document(self.indexes.station(d, h), now)
                    for d, h in closed.items()]
        areas = []
        for area in self.config.air_areas:
            hours = [closed[s] for s in area.stations if s in closed]
            if hours:
                index, _ = self.indexes.area(area, max(hours))
                areas.append(self.indexes.document(index, now))
        return {"scale": self.config.air_scale, "stations": stations, "areas": areas}

    def station(self, device: str, hours: int = CHART_HOURS) -> dict[str, Any] | None:
        """One station's last ``hours`` closed hours: PM2.5, level, colour, status."""
        last = self._last_closed().get(device)
        if last is None:
            return None
        first = last - (hours - 1) * HOUR_S
        checked = self.indexes.checked(device, first + HOUR_S - BACK_S, last + HOUR_S)
        scale = self.indexes.primary
        out = []
        for hour in range(first, last + HOUR_S, HOUR_S):
            index = air_index.station_index(device, checked, hour, scale, self.indexes.qc,
                                            self.config.air_min_readings)
            level, _ = level_of(index, scale)
            pm25 = index.values.get("pm2_5")
            out.append({"hour": air_index.iso_utc(hour + HOUR_S), "level": level,
                        "band": scale.names[level - 1] if level else None,
                        "colour": scale.colours[level - 1] if level else None,
                        "pm2_5": round(pm25[0], 1) if pm25 else None,
                        "status": index.status, "reasons": sorted(index.reasons)})
        return {"device": device, "scale": scale.name, "hours": out}


def chart_svg(station: Mapping[str, Any], width: int = 560, height: int = 150) -> str:
    """Hourly PM2.5 bars in their band colours (grey: withheld)."""
    left, right, top, bottom = 44, 6, 8, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    hours = station["hours"]
    values = [h["pm2_5"] or 0.0 for h in hours]
    top_value = max([*values, 10.0]) * 1.1
    slot = plot_w / max(len(hours), 1)
    device = escape(station["device"])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="air-chart" '
           f'data-device="{device}" aria-label="PM2.5 of {device}, last {len(hours)} hours" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
           f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" '
           f'y2="{top + plot_h}"/><text x="{left - 4}" y="{top + 8}" text-anchor="end">'
           f'{top_value:.0f}</text><text x="{left - 4}" y="{top + plot_h}" '
           'text-anchor="end">0</text>']
    for i, h in enumerate(hours):
        value = h["pm2_5"]
        bar_h = plot_h * (value or top_value * 0.05) / top_value
        colour = h["colour"] or WITHHELD
        title = (f"{h['hour']}: PM2.5 {value} µg/m³, {h['band'] or 'withheld'}"
                 f" ({h['status']}{': ' + ', '.join(h['reasons']) if h['reasons'] else ''})")
        out.append(f'<rect class="air-bar" x="{left + i * slot + slot * 0.1:.1f}" '
                   f'y="{top + plot_h - bar_h:.1f}" width="{max(slot * 0.8, 1):.1f}" '
                   f'height="{bar_h:.1f}" fill="{colour}"><title>{escape(title)}</title></rect>')
    out.append(f'<text x="{left}" y="{height - 6}">{escape(hours[0]["hour"][:13])}h</text>'
               f'<text x="{width - right}" y="{height - 6}" text-anchor="end">'
               f'{escape(hours[-1]["hour"][:13])}h UTC</text></svg>')
    return "".join(out)


_CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2733;background:#f4f6f8}
header{background:#16324f;color:#fff;padding:12px 24px}header h1{margin:0;font-size:22px}
header a{color:#c9d6e3}main{padding:8px 24px 32px}
section{background:#fff;border-radius:6px;padding:12px 16px;margin:14px 0;
 box-shadow:0 1px 2px rgba(0,0,0,.12)}
h2{font-size:18px;margin:4px 0 10px}
ul.air{list-style:none;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:10px}
ul.air li{border:1px solid #dde3ea;border-radius:6px;padding:8px 10px;min-width:220px}
.swatch{display:inline-block;width:56px;height:56px;border-radius:6px;float:left;
 margin-right:10px}
.muted{color:#6b7785;font-size:13px}.axis{stroke:#9aa6b2}svg text{font-size:11px;fill:#4a5866}
.station-chart{margin:10px 0;border-top:1px solid #dde3ea;padding-top:6px}
"""


def _card(doc: Mapping[str, Any], css: str) -> str:
    colour = doc["colour"] or WITHHELD
    band = (doc["band"] or "withheld").replace("_", " ")
    pm = doc["scales"][doc["scale"]]["pollutants"].get("pm2_5")
    reasons = ", ".join(doc["reasons"])
    extra = f" · {len(doc.get('stations', []))} stations" if doc["scope"] == "area" else ""
    return (f'<li class="{css}" data-subject="{escape(doc["subject"])}" '
            f'data-level="{doc["level"] or ""}" data-band="{escape(doc["band"] or "")}" '
            f'data-colour="{colour}" data-status="{doc["status"]}">'
            f'<span class="swatch" style="background:{colour}"></span>'
            f'<b>{escape(doc["subject"])}</b> {escape(band)}<br>'
            f'<span class="muted">PM2.5 {pm["value"] if pm else "–"} µg/m³ · '
            f'{escape(doc["status"])}{" (" + escape(reasons) + ")" if reasons else ""}'
            f'{extra}<br>hour to {escape(doc["hour"][:16])} UTC</span></li>')


def render(overview: Mapping[str, Any], charts: Sequence[Mapping[str, Any]]) -> str:
    """The ``/air`` page from ``AirView.overview`` and the stations' charts."""
    areas = "".join(_card(d, "air-area") for d in overview["areas"]) or (
        '<li class="muted">no areas configured ([[air_area]])</li>')
    stations = "".join(_card(d, "air-station") for d in overview["stations"]) or (
        '<li class="muted">no air-quality station heard yet</li>')
    scale = air_index.SCALES[overview["scale"]]
    legend = "".join(f'<span style="display:inline-block;margin-right:12px">'
                     f'<span style="display:inline-block;width:12px;height:12px;'
                     f'background:{c}"></span> {n.replace("_", " ")}</span>'
                     for n, c in zip(scale.names, scale.colours, strict=True))
    chart_html = "".join(
        f'<div class="station-chart"><b>{escape(c["device"])}</b> '
        f'<span class="muted">PM2.5, last {len(c["hours"])} hours</span><br>'
        f"{chart_svg(c)}</div>" for c in charts)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>knute: air quality</title><style>{_CSS}</style></head><body>"
        '<header><h1>knute · air quality</h1><div style="font-size:12px">scale: '
        f'{escape(overview["scale"])} · <a href="/">water</a> · JSON: '
        '<a href="/api/air">/api/air</a></div></header><main>'
        f'<section id="air-areas"><h2>Areas</h2><ul class="air">{areas}</ul></section>'
        f'<section id="air-stations"><h2>Stations</h2><ul class="air">{stations}</ul>'
        f'<p class="muted">{legend}</p></section>'
        f'<section id="air-charts"><h2>48 hours</h2>{chart_html}</section>'
        "</main></body></html>")
