"""The blind review's pure logic: the pack and its key, one ratings file per rater, the key applied (means with
t-intervals, the preference rate with Wilson's interval, computed by hand below), the refusals, and the page's
HTTP handler saving every score before it answers (a server in a thread: the server process and the browser are
test_review_page's)."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from void_pipeline.defs.evaluate.review import review_results
from void_pipeline.lib.evaluate import review
from void_pipeline.lib.evaluate.review import RatingBook, Ratings, ReviewError, ReviewPack, apply_key
from void_pipeline.lib.evaluate.review_page import ReviewServer
from void_pipeline.lib.handoffs import EvaluationPointer
from void_pipeline.lib.layout import AgentRecord
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline_tests.support.review import MARKS, review_frames, synthetic_review
from void_pipeline_tests.support.runs import failure_text


def model_of(text: str) -> str:
    return next(model for model, mark in MARKS.items() if text.startswith(mark))


def test_the_pack_shows_the_real_reply_and_two_answers_under_labels_the_key_alone_resolves(tmp_path: Path) -> None:
    paths = synthetic_review(tmp_path, threads=8)
    heldout, generations = review_frames(10)
    pack, key = review.build_pack(heldout, generations, "0123456789ab", threads=8, seed=0)
    written = ReviewPack.read(paths.review / "pack.json")
    assert len(written.items) == 8 and written.evaluation == "0123456789ab"
    assert [i.item for i in written.items] == list(range(1, 9))
    for item in written.items:
        n = int(item.example_id.rsplit("/", 1)[1])
        assert item.real == f"real reply {n}, part one\n\nreal reply {n}, part two"
        assert item.thread == f"@friend{n} asks: what do you make of topic {n}?"
        assert set(item.answers) == {"1", "2"}
    stored_key = json.loads((paths.review / "key.json").read_text())
    assert (stored_key["evaluation"], stored_key["digest"]) == ("0123456789ab", written.digest)
    for item in written.items:  # the key names, for each label, the model whose answer it shows
        labels = stored_key["items"][str(item.item)]
        assert {label: model_of(text) for label, text in item.answers.items()} == labels
    orders = {tuple(stored_key["items"][str(i.item)].values()) for i in written.items}
    assert orders == {("base", "tuned"), ("tuned", "base")}  # shuffled per thread, not one order for all
    again, _ = review.build_pack(*review_frames(8), "0123456789ab", threads=8, seed=0)
    assert again.digest == written.digest  # seeded: the same evaluation writes the same pack
    assert pack.digest != written.digest  # 8 of 10 threads: another choice, another identity
    assert "**real.**" in (paths.review / "review.md").read_text()
    assert (paths.review / "review.csv").read_text().splitlines()[0] == "item,example_id,thread,real,1,2"
    assert sorted(key, key=int) == [str(n) for n in range(1, 9)]


def rate_all(book: RatingBook, key: dict[str, dict[str, str]], scores: dict[str, list[tuple[int, int, int]]]) -> None:
    """Score each item so that each model gets ``scores[model][item - 1]`` (voice, substance, would post)."""
    for item in book.pack.items:
        for label, model in key[str(item.item)].items():
            for dimension, score in zip(review.DIMENSIONS, scores[model][item.item - 1], strict=True):
                book.rate(item.item, label, dimension, score)


def test_the_key_applied_gives_means_with_t_intervals_and_the_preference_rate_with_wilson(tmp_path: Path) -> None:
    paths = synthetic_review(tmp_path, threads=3)
    pack = ReviewPack.read(paths.review / "pack.json")
    key = review.read_key(paths.review, pack)
    alice = RatingBook(paths.review, pack, "alice")
    # would post it: base 2, 5, 4 and tuned 4, 5, 3 → one win, one tie, one loss
    rate_all(alice, key, {"base": [(1, 2, 2), (1, 2, 5), (1, 2, 4)], "tuned": [(3, 3, 4), (3, 3, 5), (3, 3, 3)]})
    results = review.review_results(paths.review)
    tuned, base = results.pooled.scores["tuned"], results.pooled.scores["base"]
    # mean 4, sd 1, n 3: 4 ± t(0.975, 2) 4.302653 / √3 = 4 ± 2.484138
    assert tuned["would_post"].mean == pytest.approx(4.0)
    assert (tuned["would_post"].low, tuned["would_post"].high) == pytest.approx((1.515862, 6.484138), abs=1e-5)
    assert base["voice"].mean == 1.0 and base["voice"].low == base["voice"].high == 1.0  # no spread, no width
    assert tuned["voice"].n == 3
    preference = results.pooled.preference
    assert (preference.wins, preference.ties, preference.losses) == (1, 1, 1)
    assert preference.rate == pytest.approx(1 / 3)
    # Wilson, 1 of 3, z 1.96: centre 0.426918, half 0.365427
    assert (preference.low, preference.high) == pytest.approx((0.061490, 0.792345), abs=1e-5)
    saved = json.loads((paths.review / "results.json").read_text())
    assert saved["pooled"]["preference"]["wins"] == 1 and saved["raters"][0]["rater"] == "alice"

    bob = RatingBook(paths.review, pack, "bob")  # a second rater: his own file, pooled with alice's
    rate_all(bob, key, {"base": [(2, 2, 1)] * 3, "tuned": [(4, 4, 5)] * 3})
    both = review.review_results(paths.review)
    assert [r.rater for r in both.per_rater] == ["alice", "bob"]
    assert both.per_rater[1].preference.wins == 3 and both.pooled.preference.wins == 4
    assert both.pooled.scores["tuned"]["voice"].mean == pytest.approx((3 * 3 + 4 * 3) / 6)
    assert sorted(p.name for p in (paths.review / "ratings").iterdir()) == ["alice.json", "bob.json"]


def test_a_thread_missing_from_the_key_is_listed_and_a_half_scored_one_reported(tmp_path: Path) -> None:
    paths = synthetic_review(tmp_path, threads=3)
    pack = ReviewPack.read(paths.review / "pack.json")
    key = review.read_key(paths.review, pack)
    book = RatingBook(paths.review, pack, "alice")
    rate_all(book, key, {"base": [(2, 2, 2)] * 3, "tuned": [(4, 4, 4)] * 3})
    del key["2"]
    ratings = [book.ratings, Ratings(tmp_path / "carol.json", "carol", pack.evaluation, pack.digest)]
    ratings[1].items = {"1": {"1": {"voice": 3}}}
    results = apply_key(pack, key, ratings)
    assert results.unkeyed == [2] and results.pooled.items == 2 and results.per_rater[0].items == 2
    assert results.incomplete == {"carol": [1]}
    assert "not in the key (not counted): items 2" in results.markdown()


def test_a_pack_key_or_ratings_of_another_evaluation_is_refused_naming_both(tmp_path: Path) -> None:
    paths = synthetic_review(tmp_path, threads=3)
    other = synthetic_review(tmp_path, threads=4, name="fedcba987654")
    pack = ReviewPack.read(paths.review / "pack.json")
    book = RatingBook(other.review, ReviewPack.read(other.review / "pack.json"), "alice")
    book.rate(1, "1", "voice", 3)
    (paths.review / "ratings").mkdir()
    (paths.review / "ratings" / "alice.json").write_bytes((other.review / "ratings" / "alice.json").read_bytes())
    with pytest.raises(ReviewError) as refused:
        review.review_results(paths.review)
    assert "evaluation fedcba987654" in str(refused.value) and "evaluation 0123456789ab" in str(refused.value)
    with pytest.raises(ReviewError, match="holds ratings of evaluation fedcba987654"):
        RatingBook(paths.review, pack, "alice")
    with pytest.raises(ReviewError, match=r"is the pack of evaluation 0123456789ab .*, not of evaluation fedcba987654"):
        ReviewPack.read(paths.review / "pack.json", evaluation="fedcba987654")
    with pytest.raises(ReviewError, match="is the key of evaluation fedcba987654"):
        review.read_key(other.review, pack)
    tampered = json.loads((paths.review / "pack.json").read_text())
    tampered["items"][0]["answers"]["1"] = "edited"
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    with pytest.raises(ReviewError, match="changed after it was written"):
        ReviewPack.read(tmp_path / "tampered.json")


@pytest.mark.parametrize("name", ["", "../alice", "a/b", ".hidden", "al ice", "x" * 65])
def test_a_rater_name_that_is_not_a_safe_file_name_is_refused(tmp_path: Path, name: str) -> None:
    paths = synthetic_review(tmp_path, threads=1)
    with pytest.raises(ReviewError, match="is not a safe file name"):
        RatingBook(paths.review, ReviewPack.read(paths.review / "pack.json"), name)
    assert not (paths.review / "ratings").exists()


def test_a_corrupt_ratings_file_is_named_and_left_as_it_is(tmp_path: Path) -> None:
    paths = synthetic_review(tmp_path, threads=2)
    pack = ReviewPack.read(paths.review / "pack.json")
    corrupt = paths.review / "ratings" / "alice.json"
    corrupt.parent.mkdir()
    corrupt.write_text('{"rater": "alice", "items": {"1": ')
    for attempt in (lambda: RatingBook(paths.review, pack, "alice"), lambda: review.review_results(paths.review)):
        with pytest.raises(ReviewError, match=re.escape(f"{corrupt} is corrupt")):
            attempt()
    assert corrupt.read_text() == '{"rater": "alice", "items": {"1": '
    corrupt.unlink()
    with pytest.raises(ReviewError, match=r"no ratings yet in .*ratings: rate the pack first"):
        review.review_results(paths.review)


@contextmanager
def page_server(paths: Any, rater: str) -> Iterator[ReviewServer]:
    server = ReviewServer(paths.review, paths.review / "pack.json", rater)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def call(server: ReviewServer, path: str, body: dict[str, Any] | None = None, host: str = "") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url.rstrip("/") + path, data=data, method="GET" if data is None else "POST")
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_page_server_saves_each_score_before_answering_and_resumes_at_the_first_unrated(tmp_path: Path) -> None:
    paths = synthetic_review(tmp_path, threads=3)
    saved = paths.review / "ratings" / "alice.json"
    with page_server(paths, "alice") as server:
        status, state = call(server, "/api/review")
        assert status == 200 and state["resume"] == 1 and len(state["items"]) == 3
        shown = json.dumps(state)
        assert "base" not in shown and "tuned" not in shown  # the key never reaches the page
        for label in ("1", "2"):
            for dimension in review.DIMENSIONS:
                status, answer = call(
                    server, "/api/rate", {"item": 1, "label": label, "dimension": dimension, "score": 4}
                )
                assert status == 200 and answer["saved"]
                assert json.loads(saved.read_text())["items"]["1"][label][dimension] == 4  # on disk when answered
        assert answer == {"saved": True, "rated": 1, "resume": 2}
        status, answer = call(server, "/api/notes", {"item": 2, "notes": "answer 2 rambles"})
        assert status == 200 and answer["resume"] == 2
        before = saved.read_bytes()
        status, refused = call(server, "/api/rate", {"item": 2, "label": "3", "dimension": "voice", "score": 4})
        assert status == 400 and "answers 1-2, scores 1-5" in refused["error"]
        status, refused = call(server, "/api/rate", {"item": 9, "label": "1", "dimension": "voice", "score": 6})
        assert status == 400 and "no item 9 in the pack (1-3)" in refused["error"]
        assert saved.read_bytes() == before
        status, refused = call(server, "/api/review", host="attacker.example:80")
        assert status == 403 and "open the page on 127.0.0.1" in refused["error"]
    with page_server(paths, "alice") as again:  # a new server over the same file: where the rater stopped
        status, state = call(again, "/api/review")
        assert state["resume"] == 2 and state["ratings"]["2"]["notes"] == "answer 2 rambles"
        status, results = call(again, "/api/finish", {})
        assert status == 200 and results["pooled"]["items"] == 1 and results["threads"] == 3
        assert results["rows"][0]["measure"] == "base voice" and results["rows"][0]["value"] == 4.0


def test_review_results_asks_for_ratings_then_shows_the_table_and_numbers(tmp_path: Path) -> None:
    storage = PipelineStorage(root=str(tmp_path / "data"), agent="void")
    layout = storage.agent_layout
    layout.write_record(AgentRecord.now("void", "did:plc:synthetic", "void.test", "http://pds", "http://plc"))
    paths = synthetic_review(layout.evaluate.root, threads=2)
    unused = tmp_path / "unused"
    layout.evaluate.write_latest(EvaluationPointer(paths.root, unused, "tiny", unused, unused))
    first = dg.materialize([review_results], resources={"storage": storage}, raise_on_error=False)
    assert not first.success
    assert "no ratings yet" in failure_text(first) and "./void-pipeline review" in failure_text(first)
    pack = ReviewPack.read(paths.review / "pack.json")
    rate_all(RatingBook(paths.review, pack, "alice"), review.read_key(paths.review, pack),
             {"base": [(2, 2, 2)] * 2, "tuned": [(4, 4, 5), (4, 4, 2)]})  # fmt: skip
    done = dg.materialize([review_results], resources={"storage": storage})
    metadata = done.asset_materializations_for_node("review_results")[0].metadata
    assert metadata["tuned_would_post_mean_score_1to5"].value == 3.5
    assert metadata["base_voice_mean_score_1to5"].value == 2.0
    assert metadata["tuned_preferred_share"].value == 0.5 and metadata["raters"].value == 1
    assert metadata["would_post_wins_ties_losses"].value == [1, 1, 0]
    table = metadata["results"]
    assert isinstance(table, dg.TableMetadataValue)
    rows = table.records
    assert len(rows) == 14 and rows[-1].data["measure"] == "tuned preferred (would post it)"
