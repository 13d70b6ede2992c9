"""`GET /`: a page for people. Streams, jobs with their live progress, tasks, and each
stream's accuracy-matrix heatmap and per-task lines (the plots of report.html), rendered on
the server with no front-end build. A few lines of script poll `GET /v1/status` and reload
the page when something changed (a job moved, an arrival landed). Browsers send the token as
a cookie set by the form at `/login`."""

from __future__ import annotations

import hashlib
import html
import json
import threading
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pipelines.service.auth import Denied
from pipelines.service.core import Service, authorize
from pipelines.service.metrics import STATES
from pipelines.tables import last_line

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.4em 0 1.4em}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:14px;text-align:left}
.failed{color:#c00}.running{color:#06c}.done{color:#2a7}
img{max-width:100%;border:1px solid #eee}
"""
REFRESH = """
<script>
let seen = null;
async function poll() {
  try {
    const r = await fetch('/v1/status', {credentials: 'same-origin'});
    if (r.ok) {
      const now = JSON.stringify(await r.json());
      if (seen !== null && now !== seen) { location.reload(); return; }
      seen = now;
    }
  } catch (e) {}
  setTimeout(poll, 3000);
}
poll();
</script>
"""
_PLOTS: dict[str, tuple[str, str | None, str | None]] = {}
_PLOT_LOCK = threading.Lock()  # pyplot is not thread-safe


def add(app: FastAPI, service: Service) -> None:
    reg = service.reg

    @app.get("/v1/status", tags=["service"])
    def status(request: Request) -> dict[str, Any]:
        """What the dashboard watches: the registry's generation, jobs by state, and the
        running jobs' progress."""
        authorize(request, "read")
        running = reg.queue.list(state="running", limit=50)
        return {
            "generation": reg.generation(),
            "jobs": {s: reg.queue.count(states=(s,)) for s in STATES},
            "running": [{"id": j.id, "progress": j.progress} for j in running],
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request) -> Response:
        try:
            authorize(request, "read")
        except Denied:
            return HTMLResponse(_login(), status_code=401)
        return HTMLResponse(render(service))

    @app.post("/login", include_in_schema=False)
    def login(token: str = Form(...)) -> Response:
        if reg.tokens.verify(token.strip()) is None:
            return HTMLResponse(_login("unknown or revoked token"), status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie("continual_token", token.strip(), httponly=True, samesite="strict")
        return response


def _login(message: str = "") -> str:
    note = f"<p class='failed'>{html.escape(message)}</p>" if message else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>continual</title>"
        f"<style>{STYLE}</style></head><body><h1>continual</h1>{note}"
        "<form method='post' action='/login'><label>Token <input name='token' "
        "type='password' size='50'></label> <button>Open</button></form></body></html>"
    )


def _table(head: list[str], rows: list[list[Any]], id_: str, classes: list[str] | None = None):
    out = [f"<table id='{id_}'><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for k, r in enumerate(rows):
        cls = f" class='{classes[k]}'" if classes else ""
        cells = "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in r)
        out.append(f"<tr{cls}>{cells}</tr>")
    if not rows:
        out.append(f"<tr><td colspan='{len(head)}'>(none)</td></tr>")
    return "".join(out) + "</table>"


def _progress(p: dict[str, Any] | None) -> str:
    if not p:
        return ""
    text = str(p.get("phase", ""))
    if p.get("steps"):
        text += f" · step {p.get('step')}/{p['steps']} · loss {p.get('loss')}"
    return text


def render(service: Service) -> str:
    reg, e = service.reg, html.escape
    bb = service.answerer.backbone
    streams = reg.streams.list()
    jobs = reg.queue.list(limit=50, offset=max(0, reg.queue.count() - 50))
    tasks = reg.tasks(limit=200)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>continual</title>",
        f"<style>{STYLE}</style></head><body><h1>continual</h1>",
        f"<p>backbone <b>{e(bb.name if bb else '(none loaded yet)')}</b> · "
        f"{reg.count_tasks()} task(s) · {len(streams)} stream(s) · "
        "<a href='/docs'>API</a> · <a href='/metrics'>metrics</a></p>",
        "<h2>Streams</h2>",
        _table(
            ["stream", "arrivals", "jobs"],
            [[s.name, s.arrivals, ", ".join(f"{k} {v}" for k, v in s.jobs)] for s in streams],
            "streams",
        ),
        "<h2>Jobs</h2>",
        _table(
            ["job", "stream", "task", "state", "position", "progress", "error"],
            [
                [
                    j.id,
                    j.stream,
                    j.task,
                    j.state,
                    j.position,
                    _progress(j.progress),
                    last_line(j.error),
                ]
                for j in reversed(jobs)
            ],  # fmt: skip
            "jobs",
            [j.state for j in reversed(jobs)],
        ),
        "<h2>Tasks</h2>",
        _table(
            ["task", "kind", "labels", "description"],
            [[t.name, t.kind, ", ".join(t.spec.get("labels") or []), t.description] for t in tasks],
            "tasks",
        ),
    ]
    for s in streams:
        if not s.arrivals:
            continue
        heat, lines = _plots(reg, s.name)
        parts.append(
            f"<h2>Stream {e(s.name)}</h2><p><a href='/v1/streams/{e(s.name)}/report'>"
            "full report</a> · <a href='/v1/streams/"
            f"{e(s.name)}/report?format=json'>report.json</a></p>"
        )
        if heat:
            parts.append(f"<p><img id='heatmap-{e(s.name)}' alt='accuracy matrix' src='{heat}'>")
        if lines:
            parts.append(f"<p><img alt='score of each task over the arrivals' src='{lines}'>")
    parts.append(REFRESH + "</body></html>")
    return "".join(parts)


def _plots(reg: Any, stream: str) -> tuple[str | None, str | None]:
    """The stream's heatmap and task lines, redrawn only when its report changed."""
    from pipelines.report import build
    from pipelines.report_html import heatmaps, task_lines

    doc = build(reg, stream)
    key = hashlib.sha256(
        json.dumps([doc["methods"], doc["tasks"]], sort_keys=True, default=str).encode()
    ).hexdigest()
    with _PLOT_LOCK:
        hit = _PLOTS.get(stream)
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
        heat, lines = heatmaps(doc), task_lines(doc)
        _PLOTS[stream] = (key, heat, lines)
    return heat, lines
