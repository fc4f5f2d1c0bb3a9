"""Serving bundles: what one promotion serves, copied into a versioned folder, and the ``current`` pointer.

A bundle holds the LoRA adapter (or names a merged model), the chat template the training used, the mention prompt
template, system prompt and tools of its dataset, and ``bundle.json``: the base model, the tool-call parser, the
served model name, the sampling defaults and where it came from (training run, evaluation, MLflow model version,
the gates it passed). Bundles are written whole (staged, then renamed) and never changed; ``current.json`` is moved
atomically. Promoting makes a new version current; rolling back makes an earlier one current again.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from void_pipeline.lib.curate.request import RequestProfile, dataset_profile
from void_pipeline.lib.files import locked, staged_dir, write_text_atomic
from void_pipeline.lib.handoffs import EvaluationPointer, TrainingOutcome, read_gates
from void_pipeline.lib.layout import BundlePaths, DatasetPaths, EvaluationPaths, ServePaths
from void_pipeline.lib.serve.client import Sampling
from void_pipeline.lib.serve.vllm_server import ServerSpec

if TYPE_CHECKING:  # jinja2 and the atproto models stay out of the server image's imports
    from void_pipeline.lib.curate.prompt import PromptTemplate

# The adapter's own files; checkpoint-N/ folders and training state stay with the run.
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # what PEFT and vLLM load, in that order
ADAPTER_FILES = ("adapter_config.json", *ADAPTER_WEIGHTS)


class BundleError(ValueError):
    """A bundle cannot be made or used; the message says what is missing."""


class NotServable(Exception):
    """The latest adapter may not be served (not evaluated, or a blocking gate failed); the message says why."""


def passed_evaluation(training: TrainingOutcome | None, evaluation: EvaluationPointer | None) -> EvaluationPaths:
    """The evaluation of the latest adapter, when its report exists and every blocking gate passed; NotServable
    naming what is missing or which gate failed. Checked when serving too, so that no run, whatever launched it,
    serves an adapter the gates stopped."""
    if training is None:
        raise NotServable("no finished training: materialize lora_adapter, eval_generations and eval_report")
    if evaluation is None or evaluation.adapter != training.adapter:
        raise NotServable(f"the latest adapter {training.adapter} has not been evaluated: "
                          "materialize eval_generations and eval_report")  # fmt: skip
    paths = EvaluationPaths(evaluation.folder)
    if not paths.report.exists() or paths.report.stat().st_mtime < paths.generations.stat().st_mtime:
        raise NotServable(f"no report on the latest generations in {paths.root}: materialize eval_report")
    gates = read_gates(paths.report)
    failed = {name: gate.why for name, gate in gates.items() if not gate.passed}
    if not gates or failed:
        reasons = "; ".join(f"{k}: {v}" for k, v in failed.items()) or "no gate was measured"
        raise NotServable(f"the adapter did not pass its blocking gates ({reasons}): not served")
    return paths


@dataclass(frozen=True)
class Bundle:
    version: int
    paths: BundlePaths
    base_model: str
    served_model_name: str
    tool_call_parser: str
    lora_rank: int
    sampling: Sampling
    adapter: str | None  # the adapter folder inside the bundle (None when a merged model is served)
    merged_model: str | None
    source: dict[str, Any]
    created: str

    @property
    def chat_template(self) -> Path | None:
        return self.paths.chat_template if self.paths.chat_template.exists() else None

    def request(self) -> RequestProfile:
        """How the model is asked (the dataset's request profile: runtime, system message, tools)."""
        return dataset_profile(self.paths.request, self.paths.system_prompt, self.paths.tools)

    def prompt_template(self) -> PromptTemplate:
        from void_pipeline.lib.curate.prompt import PromptTemplate

        saved = self.paths.saved_prompt_template()
        if saved is None:
            raise BundleError(f"bundle {self.paths.root} has no prompt template")
        return PromptTemplate.from_file(saved)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["paths"] = str(self.paths.root)
        return data


def read_bundle(paths: BundlePaths) -> Bundle:
    try:
        data = json.loads(paths.manifest.read_text())
        return Bundle(
            version=int(data["version"]),
            paths=paths,
            base_model=str(data["base_model"]),
            served_model_name=str(data["served_model_name"]),
            tool_call_parser=str(data["tool_call_parser"]),
            lora_rank=int(data["lora_rank"]),
            sampling=Sampling(**data["sampling"]),
            adapter=str(paths.adapter) if data.get("adapter") else None,
            merged_model=data.get("merged_model"),
            source=dict(data.get("source") or {}),
            created=str(data["created"]),
        )
    except FileNotFoundError as err:
        raise BundleError(f"{paths.root} is not a serving bundle (no bundle.json)") from err
    except (ValueError, KeyError, TypeError) as err:
        raise BundleError(f"{paths.manifest} is damaged ({err}): promote again") from err


def current_version(serve: ServePaths) -> int | None:
    if not serve.current.exists():
        return None
    try:
        return int(json.loads(serve.current.read_text())["version"])
    except (ValueError, KeyError, TypeError) as err:
        raise BundleError(f"{serve.current} is damaged ({err}): promote a version again") from err


def current_bundle(serve: ServePaths) -> Bundle | None:
    version = current_version(serve)
    return None if version is None else read_bundle(serve.bundle(version))


def make_current(serve: ServePaths, version: int) -> Bundle:
    """Point ``current`` at ``version`` (promote or roll back); the bundle must be whole."""
    bundle = read_bundle(serve.bundle(version))
    check_bundle(bundle)  # a missing or truncated adapter is refused here, not by the next serve up
    write_text_atomic(serve.current, json.dumps({"version": version, "since": now()}, indent=2))
    return bundle


def check_bundle(bundle: Bundle) -> None:
    """The bundle can be served: its adapter (when it has one) is whole. BundleError naming the file otherwise."""
    if bundle.adapter:
        check_adapter(Path(bundle.adapter))


def check_adapter(folder: Path) -> None:
    """A LoRA adapter vLLM can load: ``adapter_config.json`` parses, and the weights file is there and whole (a
    safetensors file's length is exactly what its header declares). BundleError naming the file otherwise."""
    config = folder / "adapter_config.json"
    try:
        if not isinstance(json.loads(config.read_text()), dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError as err:
        raise BundleError(f"{config} is missing: {folder} is not a whole LoRA adapter") from err
    except (OSError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        raise BundleError(f"{config} is damaged ({err})") from err
    weights = next((folder / name for name in ADAPTER_WEIGHTS if (folder / name).exists()), None)
    if weights is None:
        raise BundleError(f"{folder / ADAPTER_WEIGHTS[0]} is missing: the adapter has no weights")
    if weights.suffix == ".safetensors":
        check_safetensors(weights)
    elif weights.stat().st_size == 0:
        raise BundleError(f"{weights} is empty")


def check_safetensors(path: Path) -> dict[str, Any]:
    """The file is 8 bytes of header length, the JSON header, then exactly the tensor data the header's
    ``data_offsets`` reach: a truncated copy (a full disk, a killed copy) is shorter. Returns the header (tensor
    name → dtype, shape, data_offsets; ``__metadata__``)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise ValueError(f"{size} bytes, no header")
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                raise ValueError(f"its header is declared as {length} bytes, the file has {size}")
            header = json.loads(handle.read(length))
        ends = [int(tensor["data_offsets"][1]) for name, tensor in header.items() if name != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        raise BundleError(f"{path} is not a readable safetensors file ({err})") from err
    declared = 8 + length + max(ends, default=0)
    if size != declared:
        raise BundleError(f"{path} is {size} bytes but its header declares {declared}: truncated or damaged")
    return dict(header)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Promotion:
    """Where a new bundle's parts come from."""

    base_model: str
    adapter: Path
    dataset: Path
    served_model_name: str
    tool_call_parser: str
    lora_rank: int
    sampling: Sampling
    merged_model: str | None = None
    source: dict[str, Any] | None = None


def add_bundle(serve: ServePaths, promotion: Promotion) -> Bundle:
    """Copy the parts into the next version's folder (whole or not at all); ``current`` does not move."""
    adapter, files = promotion.adapter, DatasetPaths(promotion.dataset)
    check_adapter(adapter)  # no bundle version for an adapter that cannot be served
    template = files.saved_prompt_template()
    missing = [p.name for p in (files.system_prompt, files.tools) if not p.exists()] + ([] if template else ["prompt"])
    if missing:
        raise BundleError(f"the dataset {promotion.dataset} lacks {', '.join(missing)}: materialize chat_dataset again")
    assert template is not None
    serve.root.mkdir(parents=True, exist_ok=True)
    with locked(serve.root / ".promote.lock"):  # two promotions never take the same version
        version = max(serve.versions(), default=0) + 1
        target = serve.bundle(version)
        with staged_dir(target.root) as staging:
            parts = BundlePaths(staging)
            parts.adapter.mkdir()
            for name in ADAPTER_FILES:
                if (adapter / name).exists():
                    shutil.copy2(adapter / name, parts.adapter / name)
            if (adapter / "chat_template.jinja").exists():
                shutil.copy2(adapter / "chat_template.jinja", parts.chat_template)
            shutil.copy2(files.system_prompt, parts.system_prompt)
            shutil.copy2(files.tools, parts.tools)
            if files.request.exists():
                shutil.copy2(files.request, parts.request)
            shutil.copy2(template, staging / template.name)
            manifest = {
                "version": version,
                "base_model": promotion.base_model,
                "served_model_name": promotion.served_model_name,
                "tool_call_parser": promotion.tool_call_parser,
                "lora_rank": promotion.lora_rank,
                "sampling": asdict(promotion.sampling),
                "adapter": "adapter",
                "merged_model": promotion.merged_model,
                "source": {"adapter": str(adapter), "dataset": str(promotion.dataset), **(promotion.source or {})},
                "created": now(),
            }
            write_text_atomic(parts.manifest, json.dumps(manifest, indent=2))
    return read_bundle(target)


def server_spec(
    bundle: Bundle,
    dtype: str = "auto",
    env: dict[str, str] | None = None,
    max_model_len: int | None = None,
    extra_args: tuple[str, ...] = (),
    also: dict[str, Bundle] | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> ServerSpec:
    """The server for ``bundle`` (its adapter under its served name) and any more bundles on the same base, each
    under its own name (an A/B, or two agents)."""
    adapters = {bundle.served_model_name: str(bundle.paths.adapter)}
    for name, other in (also or {}).items():
        if other.base_model != bundle.base_model:
            raise BundleError(
                f"{name} (bundle v{other.version}) is on {other.base_model}, not {bundle.base_model}: "
                "adapters served together share one base model"
            )
        adapters[name] = str(other.paths.adapter)
    ranks = [bundle.lora_rank, *(b.lora_rank for b in (also or {}).values())]
    return ServerSpec(
        model=bundle.base_model,
        adapters=adapters,
        lora_rank=max(ranks),
        tool_call_parser=bundle.tool_call_parser,
        chat_template=str(bundle.chat_template) if bundle.chat_template else None,
        dtype=dtype,
        max_model_len=max_model_len,
        max_loras=len(adapters),
        extra_args=extra_args,
        env=dict(env or {}),
        host=host,
        port=port,
    )
