"""The backend's web page: HTML with inline SVG charts, rendered on the server (pure).

``render(...)`` turns the documents of ``backend.webview`` into one HTML page
that needs no script and no file besides itself: districts with their daily
balance and night-flow trend, the open alerts with their evidence, one
meter's hourly consumption with its estimated hours marked, silent meters.
Every value from the store is escaped.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

REFRESH_S = 60          # a wall display reloads the page this often

_CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2733;background:#f4f6f8}
header{background:#16324f;color:#fff;padding:12px 24px}
header h1{margin:0;font-size:22px}
.figures{display:flex;gap:24px;flex-wrap:wrap;margin-top:6px;font-size:14px}
.figures b{font-size:20px;display:block}
main{padding:8px 24px 32px}
section{background:#fff;border-radius:6px;padding:12px 16px;margin:14px 0;
 box-shadow:0 1px 2px rgba(0,0,0,.12)}
h2{font-size:18px;margin:4px 0 10px}h3{font-size:16px;margin:10px 0 4px}
.district{border-top:1px solid #dde3ea;padding-top:6px}
.charts{display:flex;flex-wrap:wrap;gap:18px}
.chart figcaption{font-size:13px;color:#4a5866}
table{border-collapse:collapse;font-size:13px}
th,td{padding:3px 8px;border-bottom:1px solid #e3e8ee;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{color:#9a3412}.muted{color:#6b7785}
.state-open{color:#b91c1c;font-weight:bold}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.swatch{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
svg text{font-size:11px;fill:#4a5866}
.households{fill:#3f8f55}.loss{fill:#c8412f}.measured,.index{fill:#3b6fb6}
.estimated{fill:#e69b3a}.missing{fill:#b6bec8}.gain{fill:#8d5cc4}
.swatch.households{background:#3f8f55}.swatch.loss{background:#c8412f}
.swatch.measured{background:#3b6fb6}.swatch.missing{background:#b6bec8}
.swatch.estimated{background:repeating-linear-gradient(45deg,#e69b3a 0 3px,#fff 3px 5px)}
.faded{opacity:.45}.axis{stroke:#9aa6b2;stroke-width:1}
.grid{stroke:#e3e8ee;stroke-width:1}
.mnf{stroke:#16324f;stroke-width:2;fill:none}.mnfdot{fill:#16324f}
.allowance{stroke:#3f8f55;stroke-dasharray:4 3}.threshold{stroke:#c8412f;stroke-dasharray:6 3}
"""


@dataclass(frozen=True)
class Bar:
    """One bar of a bar chart: stacked segments (value, css class), a tooltip."""

    label: str
    segments: tuple[tuple[float, str], ...]
    title: str
    faded: bool = False
    hatched: bool = False


class _Ids:
    """Unique ids for SVG patterns within one page."""

    def __init__(self) -> None:
        self.counter = itertools.count(1)

    def next(self, stem: str) -> str:
        return f"{stem}-{next(self.counter)}"


def _num(value: float | None, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "–"
    text = f"{value:,.{digits}f}".replace(",", "\u202f")
    return f"{text} {unit}".rstrip()


def _scale(lo: float, hi: float) -> tuple[float, float]:
    """A y range with round ends that holds [lo, hi] and 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        hi = 1.0
    step = 10 ** len(str(int(max(abs(lo), abs(hi))))) / 10
    for factor in (1, 2, 2.5, 5, 10):
        if max(abs(lo), abs(hi)) <= step * factor * 1.0001:
            step *= factor
            break
    top = step if hi > 0 else 0.0
    bottom = -step if lo < 0 and abs(lo) > step / 1000 else 0.0
    if lo < bottom:
        bottom = lo
    if hi > top:
        top = hi
    return bottom, top


def bars_svg(bars: Sequence[Bar], ids: _Ids, *, unit: str, aria: str, width: int = 560,
             height: int = 200, label_every: int = 1) -> str:
    """A stacked bar chart; negative segments hang below the zero line."""
    left, right, top, bottom = 52, 8, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    highs = [sum(v for v, _ in b.segments if v > 0) for b in bars] or [0.0]
    lows = [sum(v for v, _ in b.segments if v < 0) for b in bars] or [0.0]
    y0, y1 = _scale(min(lows), max(highs))

    def y(v: float) -> float:
        return top + plot_h * (y1 - v) / (y1 - y0)

    hatch = ids.next("hatch")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(aria)}" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
           f'<defs><pattern id="{hatch}" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="6" height="6" fill="#e69b3a"/>'
           '<line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="2.5"/>'
           '</pattern></defs>']
    for v in (y0, (y0 + y1) / 2, y1) if y0 < 0 else (0.0, y1 / 2, y1):
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(v):.1f}" '
                   f'y2="{y(v):.1f}"/><text x="{left - 4}" y="{y(v) + 4:.1f}" '
                   f'text-anchor="end">{escape(_num(v, unit))}</text>')
    n = max(len(bars), 1)
    slot = plot_w / n
    bar_w = max(slot * 0.8, 1.0)
    for i, bar in enumerate(bars):
        x = left + i * slot + (slot - bar_w) / 2
        up, down = 0.0, 0.0
        group = [f'<g class="bar{" faded" if bar.faded else ""}"><title>{escape(bar.title)}'
                 "</title>"]
        for value, css in bar.segments:
            if value >= 0:
                a, b = y(up + value), y(up)
                up += value
            else:
                a, b = y(down), y(down + value)
                down += value
            fill = f' fill="url(#{hatch})"' if bar.hatched and css == "estimated" else ""
            group.append(f'<rect class="{css}" x="{x:.1f}" y="{a:.1f}" width="{bar_w:.1f}" '
                         f'height="{max(b - a, 0.5):.1f}"{fill}/>')
        if not bar.segments:
            group.append(f'<rect class="missing" x="{x:.1f}" y="{y(0) - 2:.1f}" '
                         f'width="{bar_w:.1f}" height="2"/>')
        group.append("</g>")
        out.append("".join(group))
        if i % label_every == 0:
            out.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - bottom + 14}" '
                       f'text-anchor="middle">{escape(bar.label)}</text>')
    out.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{y(0):.1f}" '
               f'y2="{y(0):.1f}"/>')
    out.append("</svg>")
    return "".join(out)


def line_svg(points: Sequence[tuple[str, float | None]], lines: Sequence[tuple[float, str, str]],
             *, unit: str, aria: str, width: int = 420, height: int = 200) -> str:
    """A line of values (None: a gap) with horizontal reference ``lines`` (value, class, name)."""
    left, right, top, bottom = 52, 8, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, v in points if v is not None] + [v for v, _, _ in lines]
    y0, y1 = _scale(min(values, default=0.0), max(values, default=1.0))

    def y(v: float) -> float:
        return top + plot_h * (y1 - v) / (y1 - y0)

    n = max(len(points), 1)
    step = plot_w / n

    def x(i: int) -> float:
        return left + step * (i + 0.5)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(aria)}" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for v in (y0, (y0 + y1) / 2, y1):
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(v):.1f}" '
                   f'y2="{y(v):.1f}"/><text x="{left - 4}" y="{y(v) + 4:.1f}" '
                   f'text-anchor="end">{escape(_num(v, unit))}</text>')
    for value, css, name in lines:
        out.append(f'<line class="{css}" x1="{left}" x2="{width - right}" y1="{y(value):.1f}" '
                   f'y2="{y(value):.1f}"><title>{escape(name)}: {escape(_num(value, unit))}'
                   "</title></line>")
    path: list[str] = []
    for i, (label, point) in enumerate(points):
        if point is None:
            if len(path) > 1:
                out.append(f'<polyline class="mnf" points="{" ".join(path)}"/>')
            path = []
            continue
        path.append(f"{x(i):.1f},{y(point):.1f}")
        out.append(f'<circle class="mnfdot" cx="{x(i):.1f}" cy="{y(point):.1f}" r="3">'
                   f"<title>{escape(label)}: {escape(_num(point, unit, 1))}</title></circle>")
    if len(path) > 1:
        out.append(f'<polyline class="mnf" points="{" ".join(path)}"/>')
    every = max(1, len(points) // 7)
    for i, (label, _) in enumerate(points):
        if i % every == 0:
            out.append(f'<text x="{x(i):.1f}" y="{height - bottom + 14}" '
                       f'text-anchor="middle">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _local(iso_utc: str | None, tz: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if not iso_utc:
        return "–"
    return datetime.fromisoformat(iso_utc.replace("Z", "+00:00")).astimezone(tz).strftime(fmt)


def _hour_range(first: str, end: str) -> list[str]:
    """ISO hours from ``first`` up to (not including) ``end``, as the documents write them."""
    start = datetime.fromisoformat(first.replace("Z", "+00:00"))
    stop = datetime.fromisoformat(end.replace("Z", "+00:00"))
    count = int((stop - start).total_seconds() // 3600)
    return [(start + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(count)]


def _district_html(d: Mapping[str, Any], ids: _Ids) -> str:
    name = escape(str(d["name"]))
    out = [f'<div class="district" id="district-{name}"><h3>{name}</h3>',
           f'<p class="muted">inlet {escape(", ".join(d["inflow"]))}'
           + (f', outlet {escape(", ".join(d["outflow"]))}' if d["outflow"] else "")
           + f' · {d["households"]} household meters · {d["properties"]} properties'
           + (' · <span class="state-open">district leak alert open</span>'
              if d.get("leak_alert") == "open" else "") + "</p>"]
    if d["unheard"]:
        out.append(f'<p class="warn">never heard: {escape(" ".join(d["unheard"]))}</p>')
    days = d["days"]
    if not days:
        out.append('<p class="muted">no readings from this district yet</p></div>')
        return "".join(out)
    bars = []
    for day in days:
        segments: list[tuple[float, str]] = [(float(day["households_l"] or 0), "households")]
        if day["loss_l"] is not None:
            segments.append((float(day["loss_l"]), "loss" if day["loss_l"] >= 0 else "gain"))
        title = (f'{day["date"]}: inflow {_num(day["inflow_l"], "L")}, outflow '
                 f'{_num(day["outflow_l"], "L")}, households {_num(day["households_l"], "L")}, '
                 f'loss {_num(day["loss_l"], "L")}; households measured '
                 f'{day["measured"]:.0%}, estimated {day["estimated"]:.0%}, missing '
                 f'{day["missing"]:.0%}; bulk meters {day["bulk_hours"]}/{day["hours"]} h'
                 + ("" if day["complete"] else " (incomplete)"))
        bars.append(Bar(day["date"][5:], tuple(segments), title, faded=not day["complete"]))
    out.append('<div class="charts"><figure class="chart">')
    out.append(bars_svg(bars, ids, unit="L", aria=f"daily water balance of {d['name']}",
                        label_every=max(1, len(bars) // 7)))
    out.append('<figcaption class="legend"><span><i class="swatch households"></i>households'
               '</span><span><i class="swatch loss"></i>loss (inflow − outflow − households)'
               '</span><span class="faded">faded: incomplete day</span></figcaption></figure>')
    points = [(n["night"][5:], n["mnf_l_h"]) for n in d["nights"]]
    allowance = float(d["allowance_l_h"])
    out.append('<figure class="chart">')
    out.append(line_svg(points, [(allowance, "allowance", "legitimate night use"),
                                 (allowance + float(d["leak_threshold_l_h"]), "threshold",
                                  "alert threshold")],
                        unit="L/h", aria=f"minimum night flow of {d['name']}"))
    out.append('<figcaption class="legend"><span>minimum night flow 02–04 h</span>'
               '<span class="allowance-key">- - legitimate night use</span>'
               '<span class="warn">- - alert threshold</span></figcaption></figure></div>')
    rows = "".join(
        f'<tr><td>{escape(day["date"])}</td><td class="num">{_num(day["inflow_l"], "L")}</td>'
        f'<td class="num">{_num(day["outflow_l"], "L")}</td>'
        f'<td class="num">{_num(day["households_l"], "L")}</td>'
        f'<td class="num">{_num(day["loss_l"], "L")}</td>'
        f'<td class="num">{day["measured"]:.0%} / {day["estimated"]:.0%} / '
        f'{day["missing"]:.0%}</td><td>{"yes" if day["complete"] else "no"}</td></tr>'
        for day in reversed(days[-7:]))
    out.append('<table class="balance"><tr><th>day</th><th>inflow</th><th>outflow</th>'
               '<th>households</th><th>loss</th><th>measured / estimated / missing</th>'
               f'<th>complete</th></tr>{rows}</table></div>')
    return "".join(out)


def _evidence_html(evidence: Sequence[Mapping[str, Any]], ids: _Ids, tz: ZoneInfo) -> str:
    if not evidence:
        return '<span class="muted">no evidence recorded</span>'
    out = []
    if all("hour" in e and "litres" in e for e in evidence):
        bars = [Bar(_local(str(e["hour"]), tz, "%H"),
                    ((float(e["litres"]), str(e.get("quality", "measured"))),),
                    f'{_local(str(e["hour"]), tz)}: {_num(float(e["litres"]), "L", 1)} '
                    f'({e.get("quality", "")})', hatched=True)
                for e in evidence]
        out.append(bars_svg(bars, ids, unit="L", aria="evidence hours", width=420, height=140,
                            label_every=max(1, len(bars) // 8)))
    keys = list(dict.fromkeys(k for e in evidence for k in e))
    head = "".join(f"<th>{escape(k)}</th>" for k in keys)
    rows = []
    for e in evidence:
        cells = []
        for k in keys:
            value = e.get(k)
            if k in ("hour", "received_at", "last_heard") and isinstance(value, str):
                text = _local(value, tz)
            elif isinstance(value, float):
                text = f"{value:.3g}" if abs(value) < 1 else f"{value:,.1f}"
            else:
                text = "–" if value is None else str(value)
            cells.append(f"<td>{escape(text)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    out.append(f'<table class="evidence"><tr>{head}</tr>{"".join(rows)}</table>')
    return "".join(out)


def _subject_link(alert: Mapping[str, Any]) -> str:
    subject = escape(str(alert["subject"]))
    if alert.get("subject_kind") == "meter":
        return f'<a href="/?meter={quote(str(alert["subject"]))}#meter">{subject}</a>'
    return f'<a href="#district-{subject}">{subject}</a>'


def _alerts_html(alerts: Sequence[Mapping[str, Any]], ids: _Ids, tz: ZoneInfo) -> str:
    shown = [a for a in alerts if a.get("alert") != "silent"]
    silent = len(alerts) - len(shown)
    out = [f'<section id="alerts"><h2>Open alerts ({len(shown)})</h2>']
    if silent:
        out.append(f'<p class="muted">and {silent} silent meters, listed below</p>')
    if not shown:
        out.append('<p class="muted">no open alerts</p></section>')
        return "".join(out)
    out.append("<table><tr><th>alert</th><th>subject</th><th>opened</th><th>value</th>"
               "<th>rule and evidence</th></tr>")
    for a in shown:
        out.append(
            f'<tr class="alert" data-alert="{escape(str(a["alert"]))}" '
            f'data-subject="{escape(str(a["subject"]))}">'
            f'<td class="state-open">{escape(str(a["alert"]))}</td>'
            f'<td>{_subject_link(a)}</td><td>{escape(_local(a.get("opened_at"), tz))}</td>'
            f'<td class="num">{escape(_num(a.get("value"), str(a.get("unit", "")), 1))}</td>'
            f'<td>{escape(str(a.get("rule", "")))}<details><summary>evidence '
            f'({len(a.get("evidence", []))})</summary>'
            f'{_evidence_html(a.get("evidence", []), ids, tz)}</details></td></tr>')
    out.append("</table></section>")
    return "".join(out)


def _meter_html(meter: Mapping[str, Any] | None, asked: str | None, ids: _Ids,
                tz: ZoneInfo) -> str:
    value = escape(asked or (meter or {}).get("device", ""))
    out = ['<section id="meter"><h2>One meter\'s hourly consumption</h2>'
           f'<form method="get" action="/"><label>meter <input name="meter" value="{value}" '
           'size="10" pattern="[0-9a-f]{8}"></label> <button>show</button></form>']
    if meter is None:
        out.append('<p class="muted">'
                   + (f"meter {escape(asked)} has not been heard" if asked else "no meters yet")
                   + "</p></section>")
        return "".join(out)
    by_hour = {h["hour"]: h for h in meter["hours"]}
    bars = []
    for hour in _hour_range(meter["from"], meter["to"]):
        label = _local(hour, tz, "%d/%m %Hh")
        h = by_hour.get(hour)
        if h is None:
            bars.append(Bar(label, (), f"{_local(hour, tz)}: missing"))
            continue
        bars.append(Bar(label, ((float(h["litres"]), str(h["quality"])),),
                        f'{_local(hour, tz)}: {_num(float(h["litres"]), "L", 1)} '
                        f'({h["quality"]})', hatched=True))
    out.append(f'<h3>{escape(str(meter["device"]))}'
               + (f' <span class="muted">in {escape(str(meter["district"]))}</span>'
                  if meter.get("district") else "") + "</h3>")
    out.append(f'<p class="muted">{escape(_local(meter["from"], tz))} to '
               f'{escape(_local(meter["to"], tz))} ({escape(str(tz))}): '
               f'{_num(meter["total_l"], "L", 1)}; {meter["measured_hours"]} hours measured, '
               f'<span class="estimated-count">{meter["estimated_hours"]} estimated</span>, '
               f'{meter["missing_hours"]} missing; last heard '
               f'{escape(_local(meter["last_heard"], tz))}</p>')
    if bars:
        out.append(bars_svg(bars, ids, unit="L", aria=f"hourly consumption of {meter['device']}",
                            width=980, height=220, label_every=-(-len(bars) // 10)))
    out.append('<p class="legend"><span><i class="swatch measured"></i>measured (profile '
               'slot or exact from the index)</span><span><i class="swatch estimated"></i>'
               'estimated (an index difference shared over several hours)</span>'
               '<span><i class="swatch missing"></i>missing hour</span></p>')
    if meter["index_steps"]:
        steps = ", ".join(f'{_local(s["hour"], tz)} ({_num(s["index_before_l"], "L")} → '
                          f'{_num(s["index_after_l"], "L")})' for s in meter["index_steps"])
        out.append(f'<p class="warn">index went backwards: {escape(steps)}</p>')
    out.append("</section>")
    return "".join(out)


def _silent_html(silent: Sequence[Mapping[str, Any]], shown: int, tz: ZoneInfo) -> str:
    out = [f'<section id="silent"><h2>Silent meters ({len(silent)})</h2>']
    if not silent:
        out.append('<p class="muted">every meter was heard recently</p></section>')
        return "".join(out)
    rows = "".join(
        f'<tr><td><a href="/?meter={quote(str(m["device"]))}#meter">'
        f'{escape(str(m["device"]))}</a></td><td>{escape(str(m.get("district") or "–"))}</td>'
        f'<td>{escape(_local(m["last_heard"], tz))}</td>'
        f'<td class="num">{_num(m["silent_for_h"], "h", 1)}</td>'
        f'<td class="num">{m["intervals"]:g}</td></tr>'
        for m in silent[:shown])
    out.append("<table><tr><th>meter</th><th>district</th><th>last heard</th>"
               f"<th>silent for</th><th>expected intervals</th></tr>{rows}</table>")
    if len(silent) > shown:
        out.append(f'<p class="muted">and {len(silent) - shown} more: '
                   '<a href="/api/silent">/api/silent</a></p>')
    out.append("</section>")
    return "".join(out)


def render(summary: Mapping[str, Any], districts: Sequence[Mapping[str, Any]],
           alerts: Sequence[Mapping[str, Any]], meter: Mapping[str, Any] | None,
           asked_meter: str | None, silent: Sequence[Mapping[str, Any]], tz: ZoneInfo,
           silent_shown: int = 200) -> str:
    """The whole page from the view's documents."""
    ids = _Ids()
    figures = "".join(
        f"<div><b>{escape(str(value))}</b>{escape(label)}</div>" for label, value in (
            ("readings", summary["readings"]), ("water meters", summary["meters"]),
            ("districts", summary["districts"]), ("open alerts", summary["alerts_open"]),
            ("silent meters", summary["silent_meters"])))
    district_html = ("".join(_district_html(d, ids) for d in districts)
                     or '<p class="muted">no districts configured ([[district]] in the '
                        "backend's configuration)</p>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>knute: water network</title><style>{_CSS}</style></head><body>"
        '<header><h1>knute · water network</h1><div class="figures" id="summary">'
        f'{figures}</div><div class="muted" style="color:#c9d6e3;font-size:12px">as of '
        f'{escape(_local(summary["generated_at"], tz, "%Y-%m-%d %H:%M:%S"))} '
        f'{escape(str(tz))} · JSON: <a style="color:#c9d6e3" href="/api">/api</a> · '
        '<a style="color:#c9d6e3" href="/air">air quality</a></div>'
        "</header><main>"
        f'<section id="districts"><h2>Districts ({len(districts)})</h2>{district_html}'
        "</section>"
        f"{_alerts_html(alerts, ids, tz)}{_meter_html(meter, asked_meter, ids, tz)}"
        f"{_silent_html(silent, silent_shown, tz)}</main></body></html>")
