"""Check an effective axolotl config and tokenize its datasets the way `axolotl preprocess` does (trainer env).

    python -m void_pipeline.external.prepare_data CONFIG.yml

Stages: the config (axolotl's validation plus unknown keys), the base model (offline), then axolotl's own
dataset loading, which writes the prepared dataset under ``dataset_prepared_path`` for ``axolotl train`` to reuse.
The last line printed is one JSON object: {"ok": true, "train": {...}, "eval": {...}} with row, token and
trainable-token counts, or {"ok": false, "stage": ..., "errors": [...]}. Exit code 0 when ok, 2 otherwise.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from void_pipeline.external.validate_axolotl import validate

IGNORE_INDEX = -100


def dataset_stats(dataset: Any) -> dict[str, Any]:
    """Rows, tokens and trainable tokens (labels not ignored) of a tokenized dataset, computed column-wise."""
    import pyarrow.compute as pc

    if dataset is None:
        return {"rows": 0, "tokens": 0, "trainable_tokens": 0, "trainable_rows": 0}
    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    labels = table.column("labels").combine_chunks()
    lengths = pc.list_value_length(table.column("input_ids").combine_chunks())
    trainable = pc.not_equal(pc.list_flatten(labels), IGNORE_INDEX)
    parents = pc.filter(pc.list_parent_indices(labels), trainable)
    return {
        "rows": len(table),
        "tokens": int(pc.sum(lengths).as_py() or 0),
        "trainable_tokens": int(pc.sum(trainable).as_py() or 0),
        "trainable_rows": len(pc.unique(parents)),
        "min_len": int(pc.min(lengths).as_py() or 0) if len(table) else 0,
        "max_len": int(pc.max(lengths).as_py() or 0) if len(table) else 0,
    }


def source_rows(cfg: Any) -> int:
    total = 0
    for dataset in cfg.datasets or []:
        path = Path(str(dataset["path"]))
        if path.is_file():
            with path.open("rb") as handle:
                total += sum(1 for line in handle if line.strip())
    return total


def prepare(config: Path) -> dict[str, Any]:
    checked = validate(config)
    if not checked["valid"]:
        return {"ok": False, "stage": "config", "errors": checked["errors"]}

    os.environ["AXOLOTL_IS_PREPROCESS"] = "1"
    from axolotl.cli.args import PreprocessCliArgs
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets
    from axolotl.utils.trainer import disable_datasets_caching
    from transformers import AutoConfig

    cfg = load_cfg(str(config))
    try:
        AutoConfig.from_pretrained(cfg.base_model)
    except (OSError, ValueError) as err:
        return {
            "ok": False,
            "stage": "base_model",
            "errors": [
                f"base model {cfg.base_model} is not available on this machine (offline): {err}. "
                "Point VOID_BASE_MODEL_PATH at a local Hugging Face model directory."
            ],
        }
    try:
        with disable_datasets_caching():
            meta = load_datasets(cfg=cfg, cli_args=PreprocessCliArgs())
    except Exception as err:  # axolotl raises plain exceptions for empty or unusable data: report, don't crash
        return {"ok": False, "stage": "preprocess", "errors": [f"{type(err).__name__}: {err}"]}
    train, evaluation = dataset_stats(meta.train_dataset), dataset_stats(meta.eval_dataset)
    result = {
        "ok": True,
        "train": train,
        "eval": evaluation,
        "source_rows": source_rows(cfg),
        "sequence_len": cfg.sequence_len,
    }
    if train["trainable_rows"] == 0:
        dropped = result["source_rows"] - train["rows"]
        why = (
            f"all {dropped} examples are longer than sequence_len {cfg.sequence_len}"
            if train["rows"] == 0 and dropped
            else "no example has a trainable (assistant) token"
        )
        return {**result, "ok": False, "stage": "preprocess", "errors": [f"zero trainable examples: {why}"]}
    return result


def main() -> None:
    result = prepare(Path(sys.argv[1]))
    print(json.dumps(result, default=str), flush=True)
    sys.exit(0 if result["ok"] else 2)


if __name__ == "__main__":
    main()
