"""The blind review page (``void-pipeline review``): a local web server on loopback over one review pack and one
rater's ratings file. The page is one self-contained HTML document (inline CSS and JS, nothing fetched from
elsewhere); it gets the pack without its key, and posts every score as it is given: the server writes the rater's
file whole and atomically before it answers, so a closed browser or a killed server loses no acknowledged score.
Finish applies the key (results.json) and shows the results."""

from __future__ import annotations

import json
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from void_pipeline.lib.evaluate.review import (
    DIMENSION_NAMES,
    DIMENSIONS,
    LABELS,
    RatingBook,
    ReviewError,
    ReviewPack,
    finite,
    item_dict,
    review_results,
)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
MAX_BODY = 64 * 1024


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path, pack_file: Path, rater: str, port: int = 0) -> None:
        self.folder, self.pack_file = folder, pack_file
        self.pack = ReviewPack.read(pack_file)
        self.book = RatingBook(folder, self.pack, rater)
        super().__init__(("127.0.0.1", port), ReviewHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def state(self) -> dict[str, Any]:
        """What the page shows: the pack without its key, and this rater's scores so far."""
        ratings = self.book.ratings
        return {
            "identity": self.pack.identity,
            "rater": ratings.rater,
            "labels": list(LABELS),
            "dimensions": [{"key": d, "name": DIMENSION_NAMES[d]} for d in DIMENSIONS],
            "items": [item_dict(i) for i in self.pack.items],
            "ratings": ratings.items,
            "resume": ratings.first_unrated(self.pack),
        }


class ReviewHandler(BaseHTTPRequestHandler):
    server: ReviewServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per score would bury the URL the operator needs

    def do_GET(self) -> None:
        if not self.from_loopback():
            return
        if self.path == "/":
            self.send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        elif self.path == "/api/review":
            self.send_json(HTTPStatus.OK, self.server.state())
        else:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}"})

    def do_POST(self) -> None:
        if not self.from_loopback():
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise ReviewError(f"a request of {length} bytes is too large")
            body = json.loads(self.rfile.read(length) or b"{}")
            book = self.server.book
            if self.path == "/api/rate":
                book.rate(int(body["item"]), str(body["label"]), str(body["dimension"]), int(body["score"]))
            elif self.path == "/api/notes":
                book.note(int(body["item"]), str(body["notes"]))
            elif self.path == "/api/finish":
                results = review_results(self.server.folder, self.server.pack_file)
                rows = [finite(row) for row in results.rows()]
                self.send_json(HTTPStatus.OK, {"rows": rows, **results.as_dict()})
                return
            else:
                self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no action {self.path}"})
                return
        except (ReviewError, KeyError, TypeError, ValueError) as err:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
            return
        except OSError as err:  # the disk: the page says "not saved" and the score stays unacknowledged
            self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"not saved: {err}"})
            return
        ratings = book.ratings
        rated = sum(ratings.complete(i.item) for i in self.server.pack.items)
        self.send_json(
            HTTPStatus.OK, {"saved": True, "rated": rated, "resume": ratings.first_unrated(self.server.pack)}
        )

    def from_loopback(self) -> bool:
        """Requests naming another host (a web page rebinding a name to loopback) are refused."""
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if host in LOOPBACK_HOSTS:
            return True
        self.send_json(HTTPStatus.FORBIDDEN, {"error": f"host {host!r} refused: open the page on 127.0.0.1"})
        return False

    def send_json(self, status: HTTPStatus, data: dict[str, Any]) -> None:
        self.send(status, json.dumps(data, ensure_ascii=False).encode(), "application/json")

    def send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Blind review</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; background: #f6f6f4; color: #1d1d1b; }
header { position: sticky; top: 0; background: #20262e; color: #fff; padding: 8px 16px; display: flex; gap: 18px;
  align-items: baseline; flex-wrap: wrap; z-index: 1; }
header b { font-size: 17px; }
#status { margin-left: auto; padding: 1px 8px; border-radius: 4px; background: #3a7d44; }
#status.busy { background: #a07a1c; } #status.failed { background: #b3261e; }
main { padding: 12px 16px; max-width: 1400px; }
.keys { color: #555; font-size: 13px; margin: 4px 0 10px; }
kbd { border: 1px solid #aaa; border-bottom-width: 2px; border-radius: 3px; padding: 0 4px; background: #fff;
  font: 12px monospace; }
h2 { font-size: 15px; margin: 14px 0 4px; }
pre { white-space: pre-wrap; word-break: break-word; background: #fff; border: 1px solid #ddd; padding: 8px;
  margin: 0; font: 13px/1.4 ui-monospace, monospace; }
#thread { max-height: 300px; overflow: auto; }
.real pre { border-left: 4px solid #6b7280; }
.answers { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.answer pre { min-height: 60px; border-left: 4px solid #2f6fb5; }
.row { display: flex; align-items: center; gap: 6px; margin: 6px 0; padding: 3px 6px; border-radius: 4px; }
.row.focus { background: #fff3c4; outline: 2px solid #e0b100; }
.row span { width: 110px; }
.row button { width: 34px; height: 30px; border: 1px solid #999; background: #fff; border-radius: 4px; cursor: pointer; }
.row button.on { background: #2f6fb5; color: #fff; border-color: #2f6fb5; }
textarea { width: 100%; height: 56px; font: inherit; }
nav { margin: 12px 0; display: flex; gap: 8px; }
#done { display: none; padding: 8px; background: #e4f2e6; border: 1px solid #3a7d44; margin: 8px 0; }
table { border-collapse: collapse; margin-top: 8px; background: #fff; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 13px; }
</style></head>
<body>
<header><b>Blind review</b><span id="identity"></span><span>rater <b id="rater"></b></span>
<span>thread <b id="position"></b></span><span><b id="rated"></b> rated</span><span id="status">loading</span></header>
<main>
<div class="keys"><kbd>1</kbd>–<kbd>5</kbd> score the highlighted row (then the next row is highlighted) &middot;
<kbd>↑</kbd><kbd>↓</kbd> or <kbd>k</kbd><kbd>j</kbd> move between rows &middot; <kbd>n</kbd>/<kbd>→</kbd> next thread
&middot; <kbd>p</kbd>/<kbd>←</kbd> previous &middot; <kbd>u</kbd> first unrated &middot; <kbd>e</kbd> notes
(<kbd>Esc</kbd> leaves them) &middot; <kbd>f</kbd> finish. Scores: 1 poor … 5 excellent; every score is saved at once.
</div>
<div id="done">Every thread is rated. <button id="finish-now">Finish: apply the key</button></div>
<h2>The thread, as the model saw it</h2><pre id="thread"></pre>
<div class="real"><h2>The agent's real reply</h2><pre id="real"></pre></div>
<div class="answers" id="answers"></div>
<h2>Notes (optional)</h2><textarea id="notes" placeholder="what stood out in this thread"></textarea>
<nav><button id="prev">← previous (p)</button><button id="next">next (n) →</button>
<button id="finish">finish (f)</button></nav>
<div id="results"></div>
</main>
<script>
"use strict";
let review = null, current = 1, focusRow = 0, queue = Promise.resolve(), pending = 0;
const $ = (id) => document.getElementById(id);
const rows = () => review.labels.flatMap((l) => review.dimensions.map((d) => [l, d.key]));
function status(text, kind) { const s = $("status"); s.textContent = text; s.className = kind || ""; }
function post(path, body) {
  pending++; status("saving…", "busy");
  queue = queue.then(() => fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body)}).then((r) => r.json().then((data) => {
    if (!r.ok) throw new Error(data.error || r.statusText);
    pending--; $("rated").textContent = data.rated + " / " + review.items.length;
    $("done").style.display = data.resume === null ? "block" : "none";
    if (pending === 0) status("saved");
  }))).catch((err) => { pending--; status("NOT saved: " + err.message, "failed"); });
  return queue;
}
function given(item) { return review.ratings[String(item)] || (review.ratings[String(item)] = {}); }
function score(label, dim, value) {
  const g = given(current); (g[label] || (g[label] = {}))[dim] = value;
  post("/api/rate", {item: current, label: label, dimension: dim, score: value});
  focusRow = Math.min(focusRow + 1, rows().length - 1); render();
}
function show(item) {
  if (item < 1 || item > review.items.length) return;
  saveNotes(); current = item; focusRow = 0; render(); window.scrollTo(0, 0);
}
function saveNotes() {
  const text = $("notes").value, g = given(current);
  if ((g.notes || "") !== text) { g.notes = text; post("/api/notes", {item: current, notes: text}); }
}
function render() {
  const item = review.items[current - 1], g = given(current);
  $("position").textContent = current + " / " + review.items.length;
  $("thread").textContent = item.thread; $("real").textContent = item.real;
  $("notes").value = g.notes || "";
  const box = $("answers"); box.innerHTML = "";
  let index = 0;
  for (const label of review.labels) {
    const col = document.createElement("div"); col.className = "answer";
    const h = document.createElement("h2"); h.textContent = "Answer " + label; col.appendChild(h);
    const pre = document.createElement("pre"); pre.id = "answer-" + label; pre.textContent = item.answers[label];
    col.appendChild(pre);
    for (const d of review.dimensions) {
      const row = document.createElement("div"), mine = index++;
      row.className = "row" + (mine === focusRow ? " focus" : "");
      row.dataset.label = label; row.dataset.dimension = d.key;
      const name = document.createElement("span"); name.textContent = d.name; row.appendChild(name);
      for (let v = 1; v <= 5; v++) {
        const b = document.createElement("button"); b.textContent = v;
        if ((g[label] || {})[d.key] === v) b.className = "on";
        b.onclick = () => { focusRow = mine; score(label, d.key, v); };
        row.appendChild(b);
      }
      col.appendChild(row);
    }
    box.appendChild(col);
  }
}
function finish() {
  saveNotes();
  queue.then(() => fetch("/api/finish", {method: "POST"})).then((r) => r.json()).then((data) => {
    const out = $("results");
    if (data.error) { out.textContent = data.error; return; }
    const cell = (v) => v === null || v === undefined ? "–" : (typeof v === "number" ? v.toFixed(2) : v);
    let html = "<h2>Results (the key applied): " + data.pooled.items + " rated threads of " + data.threads +
      "; 95% intervals: t for means, Wilson for the preference</h2><table><tr><th>rater</th><th>measure</th>" +
      "<th>n</th><th>value</th><th>95% CI</th><th>detail</th></tr>";
    for (const r of data.rows) {
      html += "<tr><td>" + r.rater + "</td><td>" + r.measure + "</td><td>" + r.n + "</td><td>" + cell(r.value) +
        "</td><td>" + cell(r.ci_low) + " – " + cell(r.ci_high) + "</td><td>" + r.detail + "</td></tr>";
    }
    html += "</table>";
    if (data.unkeyed_items.length) html += "<p>Not in the key (not counted): items " + data.unkeyed_items + "</p>";
    out.innerHTML = html; out.scrollIntoView();
  });
}
document.addEventListener("keydown", (e) => {
  if (!review || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.target === $("notes")) { if (e.key === "Escape") { saveNotes(); $("notes").blur(); } return; }
  const [label, dim] = rows()[focusRow];
  if (e.key >= "1" && e.key <= "5") score(label, dim, Number(e.key));
  else if (e.key === "ArrowDown" || e.key === "j") { focusRow = Math.min(focusRow + 1, rows().length - 1); render(); }
  else if (e.key === "ArrowUp" || e.key === "k") { focusRow = Math.max(focusRow - 1, 0); render(); }
  else if (e.key === "n" || e.key === "ArrowRight") show(current + 1);
  else if (e.key === "p" || e.key === "ArrowLeft") show(current - 1);
  else if (e.key === "u") { const first = firstUnrated(); if (first) show(first); }
  else if (e.key === "e") { $("notes").focus(); }
  else if (e.key === "f") finish();
  else return;
  e.preventDefault();
});
function complete(item) {
  const g = review.ratings[String(item)] || {};
  return review.labels.every((l) => review.dimensions.every((d) => Number.isInteger((g[l] || {})[d.key])));
}
function firstUnrated() { return review.items.map((i) => i.item).find((i) => !complete(i)); }
let typing = null;  // notes are saved a moment after the last keystroke, and when the rater leaves them
$("notes").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(saveNotes, 600); });
$("notes").addEventListener("blur", saveNotes);
$("prev").onclick = () => show(current - 1); $("next").onclick = () => show(current + 1);
$("finish").onclick = finish; $("finish-now").onclick = finish;
fetch("/api/review").then((r) => r.json()).then((data) => {
  review = data; $("identity").textContent = data.identity; $("rater").textContent = data.rater;
  const rated = data.items.filter((i) => complete(i.item)).length;
  $("rated").textContent = rated + " / " + data.items.length;
  $("done").style.display = data.resume === null ? "block" : "none";
  current = data.resume || data.items.length; render(); status("ready");
}).catch((err) => status("cannot load the pack: " + err.message, "failed"));
</script>
</body></html>
"""
