"""axolotl configs: one versioned base per model candidate plus overlays, made into the effective config of a run.

On a CPU the ``cpu`` overlay comes first (``accelerator_overlays``): fp32, sdpa, no CUDA kernels or optimizers; on
CUDA the base config's own settings (bf16, the GPU batch) run as written.

Pure: reads and writes YAML; axolotl's own validation runs in the trainer environment
(``python -m void_pipeline.external.validate_axolotl``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from void_pipeline.lib.files import write_text_atomic
from void_pipeline.lib.layout import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "axolotl_configs"
CANDIDATES = ("llama-3.1-8b-instruct", "mistral-7b-v0.3-instruct", "llama-3.2-3b-instruct", "qwen2.5-7b-instruct")
CPU_OVERLAY = "cpu"  # what training on a CPU needs, whatever the model
TINY_OVERLAY = "tiny"  # the tiny test model's short run (tests, make demo)


def load(name: str, folder: Path = CONFIG_DIR) -> dict[str, Any]:
    path = folder / f"{name}.yml"
    if not path.exists():
        known = sorted(p.stem for p in folder.glob("*.yml"))
        raise ValueError(f"no axolotl config {name!r} in {folder} (have: {', '.join(known)})")
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} is not a mapping of config keys")
    return loaded


def accelerator_overlays(accelerator: str) -> tuple[str, ...]:
    """The overlays an accelerator (cuda | cpu, lib/accelerator.resolve) puts before the operator's."""
    return (CPU_OVERLAY,) if accelerator == "cpu" else ()


def effective_config(
    base: str,
    overlays: list[str],
    base_model: str | None,
    train_path: Path,
    output_dir: Path,
    extra: dict[str, Any] | None = None,
    folder: Path = CONFIG_DIR,
    val_path: Path | None = None,
) -> dict[str, Any]:
    """Base config, then each overlay (later keys win), then what the run decides: model, data, output.

    ``val_path`` becomes axolotl's ``test_datasets`` (same format as the training data), evaluated at the start
    of training and every ``eval_steps``: the validation loss before and after."""
    config = load(base, folder)
    for overlay in overlays:
        config.update(load(overlay, folder))
    if base_model is not None:
        config["base_model"] = base_model
    datasets = config.get("datasets") or [{}]
    config["datasets"] = [{**datasets[0], "path": str(train_path)}]
    if val_path is not None:
        config["test_datasets"] = [{**datasets[0], "path": str(val_path), "split": "train"}]
        config["val_set_size"] = 0
    else:
        config.pop("eval_steps", None)  # nothing to evaluate on
    config["output_dir"] = str(output_dir)
    config.update(extra or {})
    return config


def write(config: dict[str, Any], path: Path) -> Path:
    write_text_atomic(path, yaml.safe_dump(config, sort_keys=False))
    return path


METRICS_PLUGIN = "void_pipeline.external.axolotl_metrics.MetricsPlugin"


def with_metrics_plugin(config: dict[str, Any]) -> dict[str, Any]:
    """The config with our metrics plugin listed: its trainer callback writes every log and evaluation as data."""
    plugins = [p for p in config.get("plugins") or [] if p != METRICS_PLUGIN]
    return {**config, "plugins": [*plugins, METRICS_PLUGIN]}
