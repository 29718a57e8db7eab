"""The admin dashboard: the load table live in a browser, and as JSON.

`dashboard_routes(get_table_json)` returns Tornado URL rules for node/admin.py
to mount on the admin listener:

- `/_scale0/`             one self-contained HTML page (inline CSS and JS, no CDN,
                          so it works on an air-gapped admin network)
- `/_scale0/mesh`         the mesh JSON (shape in mesh/loadtable.py)
- `/_scale0/mesh/events`  Server-Sent Events: one `data:` line of mesh JSON each
                          `interval` seconds, and as soon as anything but the ages
                          changes (checked every `poll` seconds)

The page only ever reads the stream; EventSource reconnects by itself, so a
restarting node needs no page reload. Node ids and addresses come from peers,
so the page inserts them as text, never as HTML, and a Content-Security-Policy
admits only this page's own script and style (by hash).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tornado.iostream import StreamClosedError
from tornado.web import RedirectHandler, RequestHandler

log = logging.getLogger(__name__)

TableSource = Callable[[], dict[str, Any]]


@dataclass(slots=True)
class _Feed:
    """The table as every open stream sees it, computed at most once per tick.

    At 1,000 nodes `to_json` + encoding costs tens of milliseconds, so streams
    share one snapshot per `poll` tick; with a `version` source an unchanged
    table is not even re-read until its ages are due (half an `interval`)."""

    get: TableSource
    interval: float
    poll: float
    max_streams: int
    version: Callable[[], int] | None = None
    streams: int = 0
    _at: float = float("-inf")
    _key: object = None
    _fp: object = None
    _text: str = ""

    def current(self) -> tuple[object, str]:
        """(fingerprint, JSON text) of the table now; fingerprints ignore ages."""
        now = time.monotonic()
        key = self.version() if self.version is not None else None
        age = now - self._at
        fresh_enough = self.interval / 2 if key is not None and key == self._key else self.poll / 2
        if age < fresh_enough:
            return self._fp, self._text
        doc = self.get()
        self._text = json.dumps(doc, separators=(",", ":"))
        self._fp = key if key is not None else _fingerprint(doc)
        self._key, self._at = key, now
        return self._fp, self._text


def _fingerprint(doc: dict[str, Any]) -> str:
    """The document minus its ages: ages change every call and are not news."""
    nodes = doc.get("nodes")
    if isinstance(nodes, list):
        doc = {
            **doc,
            "nodes": [
                {k: v for k, v in n.items() if k != "age_s"} if isinstance(n, dict) else n
                for n in nodes
            ],
        }
    return json.dumps(doc, sort_keys=True, default=str)


class _Base(RequestHandler):
    def initialize(self, feed: _Feed) -> None:
        self.feed = feed

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")


class MeshJSONHandler(_Base):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(self.feed.current()[1])

    def head(self) -> None:  # `curl -I`: Tornado sends the head alone (and the length)
        self.get()


class MeshEventsHandler(_Base):
    """One long-lived text/event-stream per watching page, bounded in number."""

    _closed: asyncio.Event

    def on_connection_close(self) -> None:
        self._closed.set()

    async def get(self) -> None:
        self._closed = asyncio.Event()
        feed = self.feed
        if feed.streams >= feed.max_streams:
            self.set_status(503, "Too many dashboard streams")
            self.set_header("Retry-After", "5")
            self.finish(f"at most {feed.max_streams} dashboards may watch this node at once\n")
            return
        feed.streams += 1
        try:
            await self._stream(feed)
        finally:
            feed.streams -= 1

    async def _stream(self, feed: _Feed) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("X-Accel-Buffering", "no")  # a fronting nginx must not hold events
        self.write("retry: 2000\n\n")
        last_fp: object = None
        last_sent = float("-inf")
        failing = False
        while not self._closed.is_set():
            try:
                fp, text = feed.current()
                failing = False
                now = time.monotonic()
                if fp != last_fp or now - last_sent >= feed.interval:
                    self.write("data: " + text + "\n\n")
                    last_fp, last_sent = fp, now
            except Exception:  # a broken table source must not kill the listener
                if not failing:  # once per streak, not every tick
                    log.exception("dashboard: the mesh table could not be read")
                    self.write('event: problem\ndata: "the node could not read its mesh table"\n\n')
                failing = True
            try:
                await self.flush()
            except StreamClosedError:
                return
            try:
                await asyncio.wait_for(self._closed.wait(), timeout=feed.poll)
            except TimeoutError:
                pass


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.2em;margin:0 0 .3em}
#status{color:#666;margin-bottom:1em}#status.down{color:#b00}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right}
.state-alive{color:#080;font-weight:600}.state-suspect{color:#a70;font-weight:600}
.state-dead{color:#c00;font-weight:600}.state-left{color:#999}
tr.self td:first-child::after{content:" *"}.stale{color:#a70}
.svc{font-family:ui-monospace,monospace;font-size:.9em;white-space:pre}.full{color:#c00}
"""

_SCRIPT = """
"use strict";
const STATES = ["alive", "suspect", "dead", "left"];
const status = document.getElementById("status");
const body = document.getElementById("rows");
const head = document.getElementById("head");
let updates = 0;
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function fmt(x, d) { return Number(x || 0).toFixed(d); }
function render(doc) {
  const nodes = (doc.nodes || []).slice().sort((a, b) =>
    a.dc < b.dc ? -1 : a.dc > b.dc ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const names = [...new Set(nodes.flatMap(n => Object.keys(n.services || {})))].sort();
  const hr = el("tr");
  for (const h of ["node", "dc", "state", "inc", "age", "addresses"]) hr.append(el("th", h));
  for (const s of names) hr.append(el("th", s));
  head.replaceChildren(hr);
  const rows = nodes.map(n => {
    const tr = el("tr", undefined, n.id === doc.self ? "self" : "");
    tr.dataset.node = n.id;
    const state = STATES.includes(n.state) ? n.state : "left";
    tr.append(el("td", n.id), el("td", n.dc), el("td", n.state, "state state-" + state),
      el("td", n.incarnation, "num"),
      el("td", fmt(n.age_s, 1) + "s", n.age_s > 3 ? "num stale" : "num"),
      el("td", Object.entries(n.addresses || {}).map(([k, v]) => k + " " + v).join("\\n"), "svc"));
    for (const s of names) {
      const l = (n.services || {})[s];
      if (!l) { tr.append(el("td", "\\u2014")); continue; }
      const full = l.slots > 0 && l.in_flight + l.queued >= l.slots;
      tr.append(el("td", `${l.in_flight}/${l.slots} busy  q${l.queued} w${l.workers}\\n` +
        `p50 ${fmt(l.p50_ms, 0)}ms  ${fmt(l.rps, 1)}/s\\nfwd in ${fmt(l.fwd_in_rps, 1)}/s` +
        `  out ${fmt(l.fwd_out_rps, 1)}/s`, full ? "svc full" : "svc"));
    }
    return tr;
  });
  body.replaceChildren(...rows);
  updates += 1;
  document.body.dataset.updates = String(updates);
  status.className = "";
  status.textContent = `live \\u00b7 ${nodes.length} nodes \\u00b7 seen by ${doc.self}` +
    ` \\u00b7 updated ${new Date().toLocaleTimeString()}`;
}
const events = new EventSource("mesh/events");
events.onmessage = e => { try { render(JSON.parse(e.data)); } catch (err) {
  status.className = "down"; status.textContent = "bad update: " + err; } };
events.addEventListener("problem", e => { status.className = "down";
  status.textContent = JSON.parse(e.data); });
events.onerror = () => { status.className = "down";
  status.textContent = "connection lost; reconnecting\\u2026"; };
"""

PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Scale0 mesh</title><style>{_STYLE}</style></head>
<body><h1>Scale0 mesh</h1><div id="status">connecting\u2026</div>
<table><thead id="head"></thead><tbody id="rows"></tbody></table>
<script>{_SCRIPT}</script></body></html>
"""

_CSP = (
    f"default-src 'none'; script-src {_csp_hash(_SCRIPT)}; style-src {_csp_hash(_STYLE)}; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class DashboardPageHandler(_Base):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", _CSP)
        self.set_header("X-Frame-Options", "DENY")
        self.finish(PAGE)

    def head(self) -> None:
        self.get()


def dashboard_routes(
    get_table_json: TableSource,
    *,
    interval: float = 1.0,
    poll: float = 0.25,
    max_streams: int = 32,
    version: Callable[[], int] | None = None,
) -> list[tuple[str, type[RequestHandler], dict[str, Any]]]:
    """Tornado URL rules for the dashboard, the mesh JSON and its event stream.

    `get_table_json` is called on the IO loop, at most once per `poll` tick
    however many pages watch: it must not block — `LoadTable.to_json` with the
    loop's clock is what it is made for. `version` (e.g. `lambda: table.version`)
    is optional: a number that changes whenever the table does, so an unchanged
    table is neither re-read nor re-compared every tick."""
    if interval <= 0 or poll <= 0 or max_streams < 1:
        raise ValueError("dashboard interval and poll must be > 0 and max_streams >= 1")
    feed = _Feed(
        get=get_table_json,
        interval=interval,
        poll=poll,
        max_streams=max_streams,
        version=version,
    )
    args = {"feed": feed}
    return [
        (r"/_scale0", RedirectHandler, {"url": "/_scale0/"}),
        (r"/_scale0/", DashboardPageHandler, args),
        (r"/_scale0/mesh", MeshJSONHandler, args),
        (r"/_scale0/mesh/events", MeshEventsHandler, args),
    ]
