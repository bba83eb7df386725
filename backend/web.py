"""The backend's web page and the JSON endpoints behind it, served from a thread.

The stdlib ``http.server`` (``ThreadingHTTPServer``) is enough here: the page
is read by a few people and a wall display, not by the public, and it adds
no dependency to the backend. It binds ``web.host``:``web.port`` from the
configuration (a port that cannot be had is one error naming ``web.port``);
``port = 0`` takes any free port, and the log line ``web page at <url>``
says which. Requests read through their own SQLite connection (WAL: readers
never block the consumer's writes), one at a time, each in one snapshot.

GET routes (JSON unless said otherwise; docs/water.md lists the fields):

- ``/``: the page (HTML, inline SVG, no script); ``?meter=<device>``, ``?days=N``
- ``/api``: this list
- ``/api/summary``: readings, meters, open alerts, silent meters, counters
- ``/api/districts`` and ``/api/districts/<name>``: daily balances, night-flow trend
- ``/api/alerts``: ``?state=open`` (default), ``closed`` or ``all``
- ``/api/meters`` and ``/api/meters/<device>``: hourly consumption, qualities
- ``/api/silent``: meters not heard for the configured number of intervals
- ``/air``: the air-quality page (HTML); ``/api/air``, ``/api/air/<device>``: its
  documents (docs/air.md)
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from knute.backend import air_web, page
from knute.backend.config import DEVICE_HEX, Config, ConfigError
from knute.backend.store import SqlStore, open_store
from knute.backend.webview import SILENT_SHOWN, View

ROUTES = {
    "/": "the page (HTML); ?meter=<device>&days=N",
    "/api/summary": "readings, meters, open alerts, silent meters, counters",
    "/api/districts": "every district's daily balances and night-flow trend; ?days=N",
    "/api/districts/<name>": "one district; ?days=N",
    "/api/alerts": "alert documents as on MQTT; ?state=open|closed|all",
    "/api/meters": "every device heard: kind, last heard, district",
    "/api/meters/<device>": "one meter's hourly consumption with qualities; ?days=N",
    "/api/silent": "meters not heard for silent_after_intervals expected intervals",
    "/air": "the air-quality page (HTML): stations and areas in band colours, 48-hour charts",
    "/api/air": "every air station's and area's index for its last closed hour",
    "/api/air/<device>": "one air station's last 48 hours: PM2.5, level, colour, status",
}


class RequestError(Exception):
    """A request the page cannot answer: ``status`` and a one-line reason."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _days(query: dict[str, list[str]]) -> int | None:
    if "days" not in query:
        return None
    text = query["days"][-1]
    if not text.isdigit() or not 1 <= int(text) <= 366:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"days: expected 1-366, got {text!r}")
    return int(text)


def _device(text: str) -> str:
    if len(text) != 8 or not set(text) <= DEVICE_HEX:
        raise RequestError(HTTPStatus.BAD_REQUEST,
                           f"meter: {text!r} is not a device id (8 lower-case hex digits)")
    return text


class WebApp:
    """Answers one request path with (status, content type, body); no sockets here."""

    def __init__(self, config: Config, store: SqlStore, clock: Callable[[], float] = time.time
                 ) -> None:
        self.config = config
        self.store = store
        self.view = View(config, store)
        self.air = air_web.AirView(config, store)
        self.clock = clock
        self.lock = threading.Lock()

    def answer(self, target: str) -> tuple[HTTPStatus, str, bytes]:
        """The response to ``GET target``."""
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        path = parts.path.rstrip("/") or "/"
        try:
            with self.lock, self.store.snapshot():      # one state for the whole answer
                body = self._route(path, query)
        except RequestError as exc:
            return exc.status, "application/json", _json({"error": str(exc)})
        if isinstance(body, str):
            return HTTPStatus.OK, "text/html; charset=utf-8", body.encode()
        return HTTPStatus.OK, "application/json", _json(body)

    def _route(self, path: str, query: dict[str, list[str]]) -> Any:
        view = self.view
        now = self.clock()
        if path == "/":
            asked = _device(query["meter"][-1]) if query.get("meter", [""])[-1] else None
            days = _days(query)
            meter_id = asked or view.default_meter()
            meter = view.meter(meter_id, days) if meter_id else None
            return page.render(view.summary(now), view.districts(days), view.alerts("open"),
                               meter, asked, view.silent(now), self.config.timezone,
                               SILENT_SHOWN)
        if path == "/api":
            return {"endpoints": ROUTES}
        if path == "/api/summary":
            return view.summary(now)
        if path == "/api/districts":
            return view.districts(_days(query))
        if path.startswith("/api/districts/"):
            name = unquote(path.removeprefix("/api/districts/"))
            district = view.district_named(name, _days(query))
            if district is None:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no district named {name!r}")
            return district
        if path == "/api/alerts":
            state = query.get("state", ["open"])[-1]
            if state not in ("open", "closed", "all"):
                raise RequestError(HTTPStatus.BAD_REQUEST,
                                   f"state: expected open, closed or all, got {state!r}")
            return view.alerts(None if state == "all" else state)
        if path == "/api/meters":
            return view.meters()
        if path.startswith("/api/meters/"):
            device = _device(unquote(path.removeprefix("/api/meters/")))
            meter = view.meter(device, _days(query))
            if meter is None:
                raise RequestError(HTTPStatus.NOT_FOUND, f"meter {device} has not been heard")
            return meter
        if path == "/api/silent":
            return view.silent(now)
        if path == "/air":
            overview = self.air.overview(now)
            charts = [self.air.station(d["subject"]) for d in overview["stations"]]
            return air_web.render(overview, [c for c in charts if c is not None])
        if path == "/api/air":
            return self.air.overview(now)
        if path.startswith("/api/air/"):
            device = _device(unquote(path.removeprefix("/api/air/")))
            station = self.air.station(device)
            if station is None:
                raise RequestError(HTTPStatus.NOT_FOUND,
                                   f"air station {device} has not been heard")
            return station
        raise RequestError(HTTPStatus.NOT_FOUND, f"no page at {path} (see /api)")


def _json(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, indent=1).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "knute-backend"

    def do_GET(self) -> None:
        try:
            status, content_type, body = self.server.app.answer(self.path)
        except Exception as exc:        # a defect in one page must not stop the server
            self.server.on_error(f"web: error on {self.path}: {type(exc).__name__}: {exc}")
            status, content_type = HTTPStatus.INTERNAL_SERVER_ERROR, "application/json"
            body = _json({"error": f"{type(exc).__name__}: {exc}"})
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged (the page reloads every minute)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: WebApp,
                 on_error: Callable[[str], None]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.on_error = on_error
        super().__init__(address, _Handler)


class WebServer:
    """The page on ``config.web_host``:``config.web_port``, served from one thread."""

    def __init__(self, config: Config, on_error: Callable[[str], None] = print) -> None:
        self.config = config
        self.on_error = on_error
        self.store: SqlStore | None = None
        self.server: _Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address (the bound port, also when ``web.port`` is 0)."""
        assert self.server is not None
        host, port = self.server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}/"

    def start(self) -> str:
        """Bind and serve; return the URL. A bind failure is a ``ConfigError`` naming web.*."""
        store = open_store(self.config)
        address = (self.config.web_host, self.config.web_port)
        try:
            self.server = _Server(address, WebApp(self.config, store), self.on_error)
        except OSError as exc:
            store.close()
            where = "web.host" if isinstance(exc, socket.gaierror) else "web.port"
            raise ConfigError(f"{self.config.path}: {where}: cannot serve the web page on "
                              f"{address[0]}:{address[1]}: {exc.strerror or exc}") from None
        self.store = store
        self.thread = threading.Thread(target=self.server.serve_forever, name="backend-web",
                                       kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close the connection."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=10)
        if self.store is not None:
            self.store.close()
        self.server = self.thread = self.store = None
