"""review_results: the blind review's key applied to every rater's ratings of the latest evaluation's pack (rated
by hand on `./void-pipeline review`): per model the mean score per dimension, the preference rate, per rater and
pooled. Materialized by hand once raters are done; nothing automates it (it waits on people, not on data)."""

import dagster as dg
import polars as pl

from void_pipeline.defs.agent import recorded_agent
from void_pipeline.defs.evaluate.assets import eval_report
from void_pipeline.defs.metadata import OWNERS, as_metadata, table_preview
from void_pipeline.lib.evaluate import review
from void_pipeline.lib.handoffs import HandoffError
from void_pipeline.lib.layout import EvaluationPaths
from void_pipeline.resources.storage import PipelineStorage

WAITS_ON_RATERS = {"void/waits_on": "raters"}  # the demo leaves it out: it needs a person's ratings first


@dg.asset(
    deps=[eval_report],
    group_name="evaluate",
    owners=OWNERS,
    kinds={"python"},
    tags=WAITS_ON_RATERS,
    description="The blind review's results: the key applied to each rater's scores (voice, substance, would post "
    "it; 1-5) of the latest evaluation's pack; means with 95% t-intervals, tuned-over-base preference (Wilson).",
)
def review_results(storage: PipelineStorage) -> dg.MaterializeResult:
    _, layout = recorded_agent(storage)
    try:
        latest = layout.evaluate.read_latest()
    except HandoffError as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    if latest is None:
        raise dg.Failure("no evaluation yet: materialize eval_report, then rate it (./void-pipeline review)",
                         allow_retries=False)  # fmt: skip
    folder = EvaluationPaths(latest.folder).review
    try:
        results = review.review_results(folder, evaluation=latest.folder.name)
    except review.ReviewError as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    table = pl.DataFrame(results.rows()).fill_nan(None)
    metadata = as_metadata(review.results_metadata(results, folder))
    metadata["results"] = table_preview(table, table.columns, rows=table.height)
    return dg.MaterializeResult(metadata=metadata)
