"""shadow_report over day folders written by hand (support/shadow.py): numbers derived by hand for small inputs, the
trend over three days, the worst pairs' order, the warning when the candidate is worse, skipped and empty days."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from void_pipeline.defs.evaluate.shadow_report import shadow_report
from void_pipeline.lib.evaluate import shadow_report as shadow
from void_pipeline.lib.layout import ServePaths, ShadowPaths
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer
from void_pipeline_tests.support.runs import failure_text
from void_pipeline_tests.support.shadow import AGENT, recorded_storage, write_day, write_served_dataset, write_skipped

SHEET = "Str 8, Dex 14, Con 12, Wis 10. Roll initiative."
REAL = {
    "e0": ["the network remembers"],
    "e1": ["loops feed themselves"],
    "e2": ["memory is shared"],
    "e3": ["signals drift slowly"],
}
# The served model repeats each real reply; the candidate: no call, a character sheet, and two partial answers.
CANDIDATE = {"e0": [], "e1": [SHEET], "e2": ["memory is not shared"], "e3": ["signals drift"]}


def materialize(root: Path, day: str, trainer_python: str | None = None, similarity: bool = False) -> Any:
    resources = {
        "storage": PipelineStorage(root=str(root), agent=AGENT),
        "trainer": Trainer(python=trainer_python),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }
    config = {"ops": {"shadow_report": {"config": {"similarity": similarity}}}}
    return dg.materialize(
        [shadow_report], partition_key=day, resources=resources, run_config=config, raise_on_error=False
    )


def check_result(result: Any) -> dg.AssetCheckEvaluation:
    evaluations: list[dg.AssetCheckEvaluation] = result.get_asset_check_evaluations()
    (evaluation,) = evaluations
    return evaluation


def test_a_day_is_scored_per_model_its_worst_pairs_listed_and_a_worse_candidate_warned(tmp_path: Path) -> None:
    layout = recorded_storage(tmp_path)
    paths = layout.agent(AGENT).shadow.day("2026-12-01")
    write_day(paths, REAL, {"production": REAL, "candidate": CANDIDATE})

    result = materialize(tmp_path, "2026-12-01")

    assert result.success, failure_text(result)
    metadata = result.asset_materializations_for_node("shadow_report")[0].metadata
    assert metadata["status"].value == "reported" and metadata["replies"].value == 4
    assert metadata["production_call_validity_share"].value == 1.0
    assert metadata["candidate_call_validity_share"].value == 0.75  # e0 made no call
    assert metadata["candidate_character_sheet_per_1000"].value == 250.0  # 1 of 4 answers
    assert metadata["production_character_sheet_per_1000"].value == 0.0
    assert metadata["worst_pairs_measure"].value == shadow.OVERLAP  # similarity off for this test
    worst = [r.data for r in metadata["worst_pairs"].records]
    # candidate's word overlap: e0 nothing said 0, e1 the sheet shares no word 0, e3 2 of 3 words, e2 3 of 4
    assert [r["example_id"] for r in worst] == ["e0", "e1", "e3", "e2"]
    assert [r["candidate_word_overlap_jaccard"] for r in worst] == [0.0, 0.0, 0.6667, 0.75]
    assert [r["production_word_overlap_jaccard"] for r in worst] == [1.0] * 4
    assert worst[0]["thread"] == '"@void what about e0?"' and worst[0]["candidate_answer"] == "(no call)"
    assert (
        worst[1]["real_reply"] == "loops feed themselves" and worst[1]["production_answer"] == "loops feed themselves"
    )
    assert "](data:image/png;base64,iVBOR" in metadata["trend_plot"].value  # the plot, inline
    assert [r.data["day"] for r in metadata["days"].records] == ["2026-12-01"]
    assert metadata["not_measured"].value == {
        "authorship": "no training dataset of the served bundle is known",  # no dataset named, no bundle served
        "similarity": "off (config similarity: false)",
    }
    assert paths.trend_plot.exists() and paths.report.exists()
    assert "## The 4 worst pairs (word_overlap_jaccard)" in paths.report_markdown.read_text()

    check = check_result(result)
    assert check.check_name == "candidate_not_below_production" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert (
        check.metadata["why"].value == "candidate below production on call_validity: candidate 0.750 < production 1.000"
    )
    assert check.metadata["candidate_call_validity_share"].value == 0.75


AGENT_STYLE = [f"the network remembers what node {n} forgot; memory is a commons, {n} echoes deep." for n in range(12)]
OTHER_STYLE = [f"lol my cat #{n} just knocked my coffee over AGAIN!!! send help" for n in range(12)]


def test_authorship_is_measured_with_the_served_bundles_training_dataset(tmp_path: Path) -> None:
    layout = recorded_storage(tmp_path)
    dataset = write_served_dataset(tmp_path / "datasets", layout, AGENT_STYLE[:10], OTHER_STYLE[:10])
    paths = layout.agent(AGENT).shadow.day("2026-12-01")
    real = {"e0": [AGENT_STYLE[10]], "e1": [AGENT_STYLE[11]]}
    candidate = {"e0": [OTHER_STYLE[10]], "e1": [OTHER_STYLE[11]]}  # answers in another author's style
    write_day(paths, real, {"production": real, "candidate": candidate}, {"dataset": str(dataset)})

    result = materialize(tmp_path, "2026-12-01")

    assert result.success, failure_text(result)
    metadata = result.asset_materializations_for_node("shadow_report")[0].metadata
    assert metadata["authorship"].value["trained_on_agent_posts"] == 10
    assert metadata["authorship"].value["trained_on_other_posts"] == 10
    assert metadata["production_authorship_pass_share"].value == 1.0
    assert metadata["real_authorship_pass_share"].value == 1.0  # the ceiling: the agent's real replies
    assert metadata["candidate_authorship_pass_share"].value == 0.0
    check = check_result(result)
    assert not check.passed and "authorship_pass_rate: candidate 0.000 < production 1.000" in str(
        check.metadata["why"].value
    )


def test_a_skipped_day_reports_its_reason_and_an_empty_day_says_it_had_no_replies(tmp_path: Path) -> None:
    layout = recorded_storage(tmp_path)
    shadow_paths = layout.agent(AGENT).shadow
    write_skipped(shadow_paths.day("2026-12-01"), "no served model (production alias) to answer with")
    write_day(shadow_paths.day("2026-12-02"), {}, {})

    skipped, empty = materialize(tmp_path, "2026-12-01"), materialize(tmp_path, "2026-12-02")

    assert skipped.success and empty.success
    said = skipped.asset_materializations_for_node("shadow_report")[0].metadata
    assert said["status"].value == "skipped"
    assert said["why"].value == "Skipped: no served model (production alias) to answer with."
    assert "Skipped: no served model" in shadow_paths.day("2026-12-01").report_markdown.read_text()
    said = empty.asset_materializations_for_node("shadow_report")[0].metadata
    assert said["status"].value == "empty" and said["replies"].value == 0
    assert said["why"].value == "No agent replies on 2026-12-02: nothing to compare."
    assert [r.data["status"] for r in said["days"].records] == ["empty", "skipped"]  # newest first
    for result in (skipped, empty):
        check = check_result(result)
        assert check.passed and str(check.metadata["why"].value).startswith("nothing to compare: ")


def test_a_day_shadow_replies_never_wrote_fails_naming_what_to_materialize(tmp_path: Path) -> None:
    layout = recorded_storage(tmp_path)
    with pytest.raises(shadow.ShadowInputMissing, match="materialize shadow_replies for that day"):
        shadow.read_day(layout.agent(AGENT).shadow.day("2026-12-05"))


def report_day(shadow_paths: ShadowPaths, day: str, valid: int) -> None:
    """A day of 4 replies where the candidate answers ``valid`` of them and makes no call in the rest."""
    candidate = {e: (REAL[e] if i < valid else []) for i, e in enumerate(REAL)}
    paths = shadow_paths.day(day)
    write_day(paths, REAL, {"production": REAL, "candidate": candidate})
    day_read = shadow.read_day(paths)
    shadow.write_shadow_report(shadow.build_shadow_report(day_read, None), day_read, paths)


def test_the_trend_holds_every_day_up_to_this_one_and_is_drawn(tmp_path: Path) -> None:
    shadow_paths = ShadowPaths(tmp_path / "shadow")
    report_day(shadow_paths, "2026-12-01", valid=2)
    write_skipped(shadow_paths.day("2026-12-02"), "no served model")
    shadow_paths.day("2026-12-02").report.write_text('{"day": "2026-12-02", "status": "skipped", "replies": 0}')
    report_day(shadow_paths, "2026-12-03", valid=3)
    report_day(shadow_paths, "2026-12-04", valid=4)  # after the day reported: not in its trend

    trend = shadow.trend_frame(shadow_paths, "2026-12-03")

    assert trend["day"].to_list() == ["2026-12-01", "2026-12-02", "2026-12-03"]
    assert trend["status"].to_list() == ["reported", "skipped", "reported"]
    validity = trend["candidate_call_validity_share"].to_list()
    assert validity[0] == 0.5 and math.isnan(validity[1]) and validity[2] == 0.75
    assert trend["production_call_validity_share"].to_list()[::2] == [1.0, 1.0]
    plot = shadow.trend_plot(trend, tmp_path / "trend.png")
    assert plot.read_bytes().startswith(b"\x89PNG")
    table = shadow.days_table(trend).frame
    assert table["day"].to_list() == ["2026-12-03", "2026-12-02", "2026-12-01"]
    assert table["candidate_call_validity_share"].to_list() == [0.75, None, 0.5]


def test_the_worst_ten_pairs_are_the_least_close_first_ties_by_id(tmp_path: Path) -> None:
    vocabulary = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    shared = [5, 9, 0, 3, 7, 10, 1, 4, 8, 2, 6, 3]  # words of the real reply each candidate answer repeats
    ids = [f"e{i:02d}" for i in range(12)]
    real = {e: [" ".join(vocabulary)] for e in ids}
    candidate = {e: [" ".join(vocabulary[:k])] if k else [] for e, k in zip(ids, shared, strict=True)}
    paths = ShadowPaths(tmp_path).day("2026-12-01")
    write_day(paths, real, {"production": real, "candidate": candidate})

    report = shadow.build_shadow_report(shadow.read_day(paths), None)

    order = report.worst["example_id"].to_list()
    assert order == ["e02", "e06", "e09", "e03", "e11", "e07", "e00", "e10", "e04", "e08"]  # e01 (9) and e05 (10) not
    assert report.worst["candidate_word_overlap_jaccard"].to_list() == [
        0.0,
        0.1,
        0.2,
        0.3,
        0.3,
        0.4,
        0.5,
        0.6,
        0.7,
        0.8,
    ]


def test_without_a_candidate_the_check_passes_saying_so_and_the_served_model_is_ranked(tmp_path: Path) -> None:
    paths = ShadowPaths(tmp_path).day("2026-12-01")
    settings = {"models": ["production"], "shadow": {"candidate": {"none": "no evaluated adapter"}}}
    write_day(paths, REAL, {"production": CANDIDATE}, settings)

    report = shadow.build_shadow_report(shadow.read_day(paths), None)

    assert shadow.candidate_verdict(report) == (True, "no candidate: only the served model answered", {})
    assert report.worst["example_id"].to_list() == ["e0", "e1", "e3", "e2"]
    assert "candidate_answer" not in report.worst.columns
    assert report.why.endswith("No candidate (no evaluated adapter): only the served model answered.")


def test_the_served_dataset_comes_from_the_day_settings_else_the_current_bundle(tmp_path: Path) -> None:
    serve = ServePaths(tmp_path / "serve")
    assert shadow.served_dataset({"dataset": "/data/ds/openai"}, serve) == Path("/data/ds/openai")
    assert shadow.served_dataset({}, serve) is None  # nothing promoted yet
    for version, dataset in ((1, "/data/ds/one"), (2, "/data/ds/two")):
        bundle = serve.bundle(version)
        bundle.root.mkdir(parents=True)
        manifest = {"version": version, "base_model": "tiny", "served_model_name": "void", "tool_call_parser": "hermes",
                    "lora_rank": 8, "sampling": {}, "source": {"dataset": dataset}, "created": "2026-12-01T00:00:00"}  # fmt: skip
        bundle.manifest.write_text(json.dumps(manifest))
    serve.current.write_text('{"version": 2}')
    assert shadow.served_dataset({"shadow": {"production": {"bundle": 1}}}, serve) == Path("/data/ds/one")
    assert shadow.served_dataset({}, serve) == Path("/data/ds/two")  # the current bundle's


MEMORY = "Collective memory is a property of the network, not of any single node."
PARAPHRASE = "Memory held collectively belongs to the network rather than to one node."
UNRELATED = "My cat knocked the coffee off the table again this morning."


@pytest.mark.integration  # the similarity step runs in the trainer environment through Pipes
def test_the_asset_measures_similarity_through_pipes_and_ranks_the_worst_pairs_by_it(
    tmp_path: Path, trainer_bin: Path
) -> None:
    layout = recorded_storage(tmp_path)
    paths = layout.agent(AGENT).shadow.day("2026-12-01")
    real = {e: [MEMORY] for e in ("e0", "e1", "e2", "e3")}
    candidate = {"e0": [], "e1": [UNRELATED], "e2": [PARAPHRASE], "e3": [MEMORY]}
    write_day(paths, real, {"production": real, "candidate": candidate})

    result = materialize(tmp_path, "2026-12-01", str(trainer_bin / "python"), similarity=True)

    assert result.success, failure_text(result)
    metadata = result.asset_materializations_for_node("shadow_report")[0].metadata
    assert metadata["production_semantic_similarity_cosine"].value == pytest.approx(1.0, abs=1e-3)  # the same text
    assert metadata["candidate_semantic_similarity_cosine"].value < 0.9
    assert metadata["worst_pairs_measure"].value == shadow.COSINE
    worst = [r.data for r in metadata["worst_pairs"].records]
    assert [r["example_id"] for r in worst] == ["e0", "e1", "e2", "e3"]  # no call, unrelated, paraphrase, the same
    assert worst[0]["candidate_similarity_cosine"] == -1.0  # no call: the lowest a cosine can be
    assert worst[-1]["candidate_similarity_cosine"] == pytest.approx(1.0, abs=1e-3)
    check = check_result(result)
    assert not check.passed and "semantic_similarity: candidate" in str(check.metadata["why"].value)
