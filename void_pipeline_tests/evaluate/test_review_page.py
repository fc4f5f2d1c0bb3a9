"""The blind review page in a real browser (Playwright + Debian's chromium) against `python -m void_pipeline
review` on a tiny synthetic evaluation: five threads rated with the keyboard alone, the server killed (SIGKILL),
started again, the page resuming at thread 6, the rest rated, Finish, and the key applied read back. Screenshots
land in $VOID_TEST_ARTIFACTS (default <repo>/.data/test-artifacts/review)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, expect

from void_pipeline.lib.evaluate import review
from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline_tests.support.browser import chromium, recorded
from void_pipeline_tests.support.review import MARKS, review_page, synthetic_review

pytestmark = pytest.mark.integration  # a browser and a server process

ARTIFACTS = Path(os.environ.get("VOID_TEST_ARTIFACTS") or REPO_ROOT / ".data" / "test-artifacts" / "review")
TIMEOUT_MS = 30_000
THREADS = 7
SCORES = {"base": "231", "tuned": "454"}  # voice, substance, would post it: typed per answer, by whose it is


def rate_with_the_keyboard(page: Page, position: int) -> None:
    """Read both answers (their words say whose they are; the page does not), type each one's three scores, wait
    for "saved", go on with n."""
    expect(page.locator("#position")).to_have_text(f"{position} / {THREADS}")
    for label in ("1", "2"):
        text = page.locator(f"#answer-{label}").inner_text()
        model = next(m for m, mark in MARKS.items() if text.startswith(mark))
        for digit in SCORES[model]:
            page.keyboard.press(digit)
    expect(page.locator("#status")).to_have_text("saved")
    expect(page.locator(".row button.on")).to_have_count(6)
    if position == 3:  # a note, typed after e, left with Esc
        page.keyboard.press("e")
        page.keyboard.type("answer 1 rambles")
        page.keyboard.press("Escape")
        expect(page.locator("#status")).to_have_text("saved")
    if position < THREADS:
        page.keyboard.press("n")


def test_rate_kill_the_server_resume_and_read_the_results(tmp_path: Path) -> None:
    paths = synthetic_review(tmp_path, threads=THREADS)
    pack = paths.review / "pack.json"
    log = tmp_path / "review.log"
    outside: list[str] = []

    def loopback_only(route: Route) -> None:  # the page fetches nothing from elsewhere
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)
        context.route("**/*", loopback_only)
        page = context.new_page()
        with review_page(pack, "alice", log) as (server, url):
            page.goto(url)
            with recorded(page, ARTIFACTS, "review-first-thread"):
                expect(page.locator("#status")).to_have_text("ready")
                expect(page.locator("#real")).to_contain_text("real reply")
            for position in range(1, 6):
                rate_with_the_keyboard(page, position)
            with recorded(page, ARTIFACTS, "review-five-rated"):
                expect(page.locator("#rated")).to_have_text(f"5 / {THREADS}")
            server.send_signal(signal.SIGKILL)
            assert server.wait(timeout=30) == -signal.SIGKILL
        with review_page(pack, "alice", log) as (_, url):
            page.goto(url)
            with recorded(page, ARTIFACTS, "review-resumed"):
                expect(page.locator("#status")).to_have_text("ready")
                expect(page.locator("#position")).to_have_text(f"6 / {THREADS}")
            for position in range(6, THREADS + 1):
                rate_with_the_keyboard(page, position)
            expect(page.locator("#done")).to_be_visible()
            page.keyboard.press("f")
            with recorded(page, ARTIFACTS, "review-results"):
                expect(page.locator("#results table tr")).to_have_count(
                    1 + 2 * 7
                )  # a header, then alice and pooled: 6 means and a preference each
                expect(page.locator("#results")).to_contain_text(f"{THREADS} rated threads of {THREADS}")
        context.close()
    assert outside == []
    printed = subprocess.run(  # the key applied by the command, then read back from the file the page wrote
        [sys.executable, "-m", "void_pipeline", "review", "--results", "--pack", str(pack)],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "| pooled | tuned would post it | 7 | 4.00 |" in printed and "| alice | base voice | 7 | 2.00 |" in printed
    notes = json.loads((paths.review / "ratings" / "alice.json").read_text())["items"]["3"]["notes"]
    assert notes == "answer 1 rambles"
    results = review.review_results(paths.review)
    assert results.pooled.items == THREADS and [r.rater for r in results.per_rater] == ["alice"]
    for model, typed in SCORES.items():
        means = {d: results.pooled.scores[model][d].mean for d in review.DIMENSIONS}
        assert means == dict(zip(review.DIMENSIONS, map(float, typed), strict=True)), model
    assert (results.pooled.preference.wins, results.pooled.preference.ties) == (THREADS, 0)
