"""Operator commands around the Dagster instance: ``settings``, ``ui`` and ``free-slots``; and ``review``.

settings     every VOID_* setting in force and where it came from (the environment, or $VOID_SETTINGS_FILE)
ui           the Dagster web UI and daemon (``dg dev``) on a port that is checked free first (make ui)
free-slots   give back the pool slots ("gpu") that dead runs hold: a run whose worker was killed can leave its step's
             slot claimed, and every later step of the pool then waits in the queue ("blocked by global concurrency
             limits"). The daemon's run monitoring frees a finished run's slots by itself after a minute.
review       the blind review page over the latest evaluation's review pack, on loopback (docs/evaluate.md)
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from void_pipeline.lib.files import Busy, acquire_owner
from void_pipeline.lib.layout import DataLayout, EvaluationPaths, data_root
from void_pipeline.lib.settings import settings

DEFAULT_UI_PORT = 3000


def add_commands(sub: Any) -> None:
    settings = sub.add_parser("settings", help="every VOID_* setting in force and where it came from")
    settings.add_argument("--json", action="store_true")
    ui = sub.add_parser("ui", help="the Dagster web UI and daemon (dg dev) on a free port (make ui)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=DEFAULT_UI_PORT)
    slots = sub.add_parser("free-slots", help="free the pool slots held by finished or dead runs ($DAGSTER_HOME)")
    slots.add_argument(
        "--fail-run", default=None, metavar="RUN_ID",
        help="first mark this run failed (its worker is gone but it still shows STARTED), then free its slots",
    )  # fmt: skip
    review = sub.add_parser("review", help="the blind review page over the latest evaluation's review pack")
    review.add_argument("--rater", default=None, help="your name: your ratings go to review/ratings/NAME.json")
    review.add_argument("--pack", type=Path, default=None, help="a pack.json (default: the agent's latest evaluation)")
    review.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one)")
    review.add_argument("--results", action="store_true", help="apply the key to every rater's file and print it")


def settings_command(args: argparse.Namespace) -> int:
    in_force = settings()
    if args.json:
        data = {
            "agent": in_force.agent,
            "actor": in_force.actor,
            "sources": [{"name": s.name, "value": s.value, "origin": s.origin} for s in in_force.sources],
            "notes": list(in_force.notes),
            "problems": list(in_force.problems),
        }
        print(json.dumps(data, indent=2))
    else:
        print(f"agent: {in_force.agent} = {in_force.actor} (PLC {in_force.plc_url})")
        for source in in_force.sources:
            print(f"  {source.name}={source.value}  ({source.origin})")
        if not in_force.sources:
            print("  no VOID_* variable is set: every setting is its default")
        for note in in_force.notes:
            print(f"note: {note}")
        for problem in in_force.problems:
            print(f"problem: {problem}", file=sys.stderr)
    return 1 if in_force.problems else 0


def port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (None: it can)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            return "in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err))
    return None


def ui_command(args: argparse.Namespace) -> int:
    """Say which agent and settings the UI opens on, check the port, then become ``dg dev``: a busy port is an
    error at once (dg dev would start its daemon and leave it running beside a failed webserver)."""
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port} is not a TCP port (1-65535)", file=sys.stderr)
        return 2
    if settings_command(argparse.Namespace(json=False)):
        print("every run will refuse to start until the problems above are fixed", file=sys.stderr)
    if why := port_in_use(args.host, args.port):
        print(f"error: port {args.port} on {args.host} is {why}: choose another, e.g. UI_PORT={args.port + 1} make ui",
              file=sys.stderr)  # fmt: skip
        return 1
    dg = shutil.which("dg", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if dg is None:
        print("error: dg (dagster-dg-cli) is not installed in this environment: make setup", file=sys.stderr)
        return 1
    print(f"Dagster UI: http://{args.host}:{args.port}", flush=True)
    os.execv(dg, [dg, "dev", "-h", args.host, "-p", str(args.port)])
    return 0  # not reached


def free_slots_command(args: argparse.Namespace) -> int:
    home = os.environ.get("DAGSTER_HOME")
    if not home or not os.path.isdir(home):
        print(f"error: DAGSTER_HOME={home or '(unset)'} is not the instance's folder: export it first", file=sys.stderr)
        return 2
    import dagster as dg

    from void_pipeline.defs.run_slots import free_slots

    with dg.DagsterInstance.get() as instance:
        try:
            report = free_slots(instance, args.fail_run)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    for slot in report.freed:
        print(f"freed {slot.pool} slot of run {slot.run_id} ({slot.status}), step {slot.step_key}")
    for slot in report.still_held:
        print(
            f"held: {slot.pool} slot of run {slot.run_id} ({slot.status}), step {slot.step_key}; if its worker is "
            f"gone: ./void-pipeline free-slots --fail-run {slot.run_id}"
        )
    if not report.freed and not report.still_held:
        print("no pool slot is held")
    return 0


def latest_pack() -> Path:
    """The review pack of the current agent's latest evaluation (evaluate/latest.json)."""
    from void_pipeline.lib.evaluate.review import pack_path

    layout = DataLayout(data_root()).agent(settings().agent)
    latest = layout.evaluate.read_latest()
    if latest is None:
        raise ValueError(f"no evaluation yet in {layout.evaluate.root}: materialize eval_report (or give --pack)")
    return pack_path(EvaluationPaths(latest.folder).review)


def review_command(args: argparse.Namespace) -> int:
    """Serve the review page until interrupted, or (``--results``) apply the key and print the results."""
    from void_pipeline.lib.evaluate import review
    from void_pipeline.lib.evaluate.review_page import ReviewServer

    usage = None
    if not 0 <= args.port < 65536:
        usage = f"--port {args.port} is not a TCP port (0 for a free one, or 1-65535)"
    elif args.rater is None and not args.results:
        usage = "--rater NAME is required: your ratings are saved under that name"
    elif args.rater is not None and (error := review.rater_error(args.rater)):
        usage = f"--rater: {error}"
    if usage:
        print(f"error: {usage}", file=sys.stderr)
        return 2
    try:
        pack = (args.pack or latest_pack()).resolve()
        if args.results:
            print(review.review_results(pack.parent, pack).markdown())
            print(f"written: {review.results_path(pack.parent)}")
            return 0
        if not review.ReviewPack.read(pack).items:
            raise ValueError(f"{pack} holds no thread: the evaluation has none that both models answered")
        folder = review.ratings_folder(pack.parent)
        with acquire_owner(folder / f".{args.rater}.lock", "review page", f"rater {args.rater}'s ratings"):
            server = ReviewServer(pack.parent, pack, args.rater, args.port)
            resume = server.book.ratings.first_unrated(server.pack)
            where = f"resuming at thread {resume}" if resume else "every thread is rated: press f to finish"
            print(f"review page: {server.url} ({server.pack.identity}, rater {args.rater}, {where})", flush=True)
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                print("stopped: every acknowledged score is saved", flush=True)
            finally:
                server.server_close()
    except (ValueError, Busy, OSError) as err:  # ReviewError and HandoffError are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


COMMANDS = {
    "settings": settings_command,
    "ui": ui_command,
    "free-slots": free_slots_command,
    "review": review_command,
}
