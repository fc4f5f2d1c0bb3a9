"""A tiny synthetic evaluation for the blind review: held-out threads and both models' answers as the evaluation
stores them (no training, no server), the answers' words saying whose they are so a test can tell them apart
while the page cannot (it never gets the key)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from void_pipeline.lib.evaluate.review import write_review_pack
from void_pipeline.lib.layout import REPO_ROOT, EvaluationPaths

# the words only each model's answers hold: a test reading an answer knows whose it is
MARKS = {"base": "plain", "tuned": "voiced"}


def review_frames(threads: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``threads`` held-out threads (prompt, the agent's real posts) and both models' first answers to each."""
    ids = [f"at://did:plc:synthetic/app.bsky.feed.post/{n:03d}" for n in range(1, threads + 1)]
    heldout = pl.DataFrame(
        {
            "example_id": ids,
            "prompt": [f"@friend{n} asks: what do you make of topic {n}?" for n in range(1, threads + 1)],
            "calls": [[f"real reply {n}, part one", f"real reply {n}, part two"] for n in range(1, threads + 1)],
        }
    )
    rows = [
        {"example_id": e, "model": m, "sample": 0, "posts": [f"{MARKS[m]} answer {n}"]}
        for n, e in enumerate(ids, 1)
        for m in MARKS
    ]
    return heldout, pl.DataFrame(rows)


def synthetic_review(root: Path, threads: int, name: str = "0123456789ab", seed: int = 0) -> EvaluationPaths:
    """An evaluation folder ``root/name`` holding a review pack of ``threads`` threads."""
    paths = EvaluationPaths(root / name)
    heldout, generations = review_frames(threads)
    write_review_pack(heldout, generations, paths, threads, seed)
    return paths


@contextmanager
def review_page(pack: Path, rater: str, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m void_pipeline review`` on a free port, as the operator starts it, and the URL it printed; the
    process is stopped at the end unless the caller already killed it."""
    command = [sys.executable, "-m", "void_pipeline", "review", "--pack", str(pack), "--rater", rater, "--port", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with open(log, "ab") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=output)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()  # the first line names the URL; EOF when the command failed
        found = re.search(r"review page: (http://127\.0\.0\.1:\d+/)", line)
        assert found, f"the review command printed {line!r} (exit {process.poll()}; stderr in {log})"
        yield process, found.group(1)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
