"""The trained LoRA adapter exported for a managed host: Together AI or Fireworks AI serves it instead of our GPU.

The operator's second way off our own server: the adapter goes to a host that runs its base model, the Letta agent's
model is pointed at that host. What each host accepts was read in its documentation (2026-12); nothing here was
uploaded to either host, so every limit below is the documentation's word, not a tested fact.

**Together AI** (uploaded adapters are served on dedicated endpoints)
- Files: the adapter folder must hold ``adapter_config.json`` and ``adapter_model.safetensors`` — safetensors only,
  a ``.bin`` adapter is not eligible (https://docs.together.ai/docs/dedicated-endpoints/adapter).
- Source: a Hugging Face repository or an S3 presigned URL to one ``.zip``/``.tar.gz`` with the files at the archive
  root, no folder above them, the URL valid for at least 100 minutes (same page). ``together models upload``
  takes a URL, not a local file: ``--model-name N --model-source URL --model-type adapter --base-model B`` (same
  page, and https://docs.together.ai/reference/cli/models). Together's own agent-skills repository
  (togethercomputer/skills, 2026-08, references/models-and-configs.md) shows a newer ``tg beta models upload ml_…
  DIR --type adapter`` that takes a local folder; it is not on the docs pages read here.
- Base model: "a base model that Together AI supports for dedicated inference" (same page) — not enumerated
  there; the serverless LoRA page lists the only bases for serverless adapters, with Together's own names
  (``meta-llama/Meta-Llama-3.1-8B-Instruct-Reference`` for Llama 3.1 8B Instruct, …;
  https://docs.together.ai/docs/adapter-upload). A base outside that table is therefore a warning, not a refusal.
- Target modules: LoRA-enabled endpoints take "only that model's supported target modules", the seven attention
  and MLP projections for the models shown (https://docs.together.ai/docs/dedicated-endpoints/lora-adapter).
- Rank: no limit is documented for uploads ("an unsupported … adapter rank is rejected … at create or upload
  time", togethercomputer/skills); Together's own LoRA fine-tuning stops at 64 for most models. Above 64 is a
  warning.
- Size: no limit found.

**Fireworks AI** (imported "LoRA addons", served on a dedicated deployment of their base; not serverless)
- Files: ``adapter_config.json`` and ``adapter_model.safetensors`` *or* ``adapter_model.bin``; "additional fields
  [of the config] may be specified but are ignored"; a ``fireworks.json`` with
  ``{"conversation_config": {"style": "jinja", "args": {"template": …}}}`` enables chat completions
  (https://fireworks.ai/docs/fine-tuning/fine-tuned-import).
- Rank: ``r`` an integer from 4 to 64 inclusive (same page).
- Target modules: ``q_proj k_proj v_proj o_proj``, ``up_proj``/``w1``, ``down_proj``/``w2``, ``gate_proj``/``w3``,
  ``block_sparse_moe.gate`` (same page).
- Base model: "only some base models support LoRA addons", named ``accounts/fireworks/models/<id>``
  (``llama-v3p1-70b-instruct`` is the documented example, https://docs.fireworks.ai/models/overview); a base we
  cannot name is a warning.
- Upload: ``firectl model create <MODEL_ID> <DIR> --base-model accounts/fireworks/models/<id>``
  (https://docs.fireworks.ai/tools-sdks/firectl/commands/model-create; older firectl: ``firectl create model``);
  deploy: ``firectl deployment create accounts/<account>/models/<MODEL_ID>`` (live merge) or ``firectl model
  load-lora`` onto a base deployment made with ``--enable-addons``
  (https://docs.fireworks.ai/fine-tuning/deploying-loras).
- Size: no limit found.

**What this module refuses for both** (one line naming the file and field, ``ExportRefused``), and why:
- a ``.bin``-only adapter: Together does not take it; Fireworks does, but this export checks every tensor it ships
  and reads a pickle for no one (loading one runs code) — convert it to safetensors;
- a missing or truncated ``adapter_config.json``/``adapter_model.safetensors`` (``bundle.check_adapter``);
- ``r`` outside the host's range; a target module the host does not list; ``modules_to_save`` or
  ``trainable_token_indices`` (whole embedding/head weights that neither host documents loading — Fireworks would
  ignore the field and serve a different model), DoRA, trained biases, a ``peft_type`` other than LORA, a task other
  than CAUSAL_LM; a tensor in the weights file that is not the LoRA A/B matrix of a listed module, or whose rank is
  not the config's;
- a base model named by a local folder (no host can serve a base that lives on our disk): give ``--base-model``
  with its hub name when the folder is a copy of a hub model.

The exported ``adapter_config.json`` keeps only the fields of a plain LoRA (those above are all off by then), with
the base's hub name: fields newer PEFT versions add at their defaults are dropped so that an older loader on the
host does not trip over keys it does not know (our reasoning; neither host documents its PEFT version).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from void_pipeline.lib.files import staged_dir, write_text_atomic
from void_pipeline.lib.serve.bundle import ADAPTER_WEIGHTS, BundleError, check_adapter, check_safetensors

CONFIG = "adapter_config.json"
WEIGHTS = ADAPTER_WEIGHTS[0]  # adapter_model.safetensors
PICKLED = ADAPTER_WEIGHTS[1]  # adapter_model.bin
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# the fields a plain LoRA's config needs; what a newer PEFT adds besides is left out of the export (see above)
PLAIN_LORA_FIELDS = ("base_model_name_or_path", "peft_type", "task_type", "r", "lora_alpha", "lora_dropout",
                     "target_modules", "bias", "fan_in_fan_out", "inference_mode", "modules_to_save", "use_rslora",
                     "use_dora", "rank_pattern", "alpha_pattern", "init_lora_weights", "revision")  # fmt: skip
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")  # org/name
EXPORT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # a subset both hosts' model names take [u: not checked]
LORA_TENSOR = re.compile(r"^(?P<module>.+)\.lora_(?P<half>[AB])(?:\.[^.]+)?\.weight$")


class ExportRefused(ValueError):
    """The adapter cannot go to that host as it is: one line naming the file and field, and what to change."""


@dataclass(frozen=True)
class Host:
    key: str  # together | fireworks
    title: str
    min_rank: int  # below: refused
    max_rank: int | None  # above: refused (None: no documented limit)
    warn_rank_above: int | None  # above: a warning
    target_modules: frozenset[str]
    archive: bool  # the upload wants one .tar.gz with the files at its root
    bases: dict[str, str]  # hub name → the host's name for that base model
    sources: tuple[str, ...]


TOGETHER_LLAMA_8B = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
TOGETHER_LLAMA_70B = "meta-llama/Meta-Llama-3.1-70B-Instruct-Reference"
FIREWORKS = "accounts/fireworks/models/"

HOSTS = {
    "together": Host(
        key="together",
        title="Together AI",
        min_rank=1,
        max_rank=None,
        warn_rank_above=64,
        target_modules=frozenset(PROJECTIONS),
        archive=True,
        bases={  # https://docs.together.ai/docs/adapter-upload (the serverless LoRA bases)
            "meta-llama/Llama-3.1-8B-Instruct": TOGETHER_LLAMA_8B,
            "meta-llama/Meta-Llama-3.1-8B-Instruct": TOGETHER_LLAMA_8B,
            "meta-llama/Llama-3.1-70B-Instruct": TOGETHER_LLAMA_70B,
            "meta-llama/Meta-Llama-3.1-70B-Instruct": TOGETHER_LLAMA_70B,
            "meta-llama/Llama-4-Maverick-17B-128E-Instruct": "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
            "Qwen/Qwen2.5-72B-Instruct": "Qwen/Qwen2.5-72B-Instruct",
            "Qwen/Qwen3-235B-A22B-Instruct-2507": "Qwen/Qwen3-235B-A22B-Instruct-2507-tput",
        },
        sources=(
            "https://docs.together.ai/docs/dedicated-endpoints/adapter",
            "https://docs.together.ai/docs/adapter-upload",
            "https://docs.together.ai/docs/dedicated-endpoints/lora-adapter",
            "https://docs.together.ai/reference/cli/models",
            "https://docs.together.ai/reference/cli/endpoints",
        ),
    ),
    "fireworks": Host(
        key="fireworks",
        title="Fireworks AI",
        min_rank=4,
        max_rank=64,
        warn_rank_above=None,
        target_modules=frozenset({*PROJECTIONS, "w1", "w2", "w3", "block_sparse_moe.gate"}),
        archive=False,
        bases={
            # the 70B id is the documented example; the 8B one follows its pattern [u: not seen in the docs here]
            "meta-llama/Llama-3.1-8B-Instruct": FIREWORKS + "llama-v3p1-8b-instruct",
            "meta-llama/Meta-Llama-3.1-8B-Instruct": FIREWORKS + "llama-v3p1-8b-instruct",
            "meta-llama/Llama-3.1-70B-Instruct": FIREWORKS + "llama-v3p1-70b-instruct",
            "meta-llama/Meta-Llama-3.1-70B-Instruct": FIREWORKS + "llama-v3p1-70b-instruct",
        },
        sources=(
            "https://fireworks.ai/docs/fine-tuning/fine-tuned-import",
            "https://docs.fireworks.ai/tools-sdks/firectl/commands/model-create",
            "https://docs.fireworks.ai/fine-tuning/deploying-loras",
            "https://docs.fireworks.ai/models/overview",
        ),
    ),
}


@dataclass(frozen=True)
class CheckedAdapter:
    """An adapter the host accepts: the config to write, the weights to copy, what the operator should know."""

    host: Host
    source: Path
    config: dict[str, Any]
    weights: Path
    base_model: str  # the hub name, as written into the exported config
    host_base_model: str | None  # the host's name for it (None: look it up)
    rank: int
    target_modules: tuple[str, ...]
    chat_template: str | None
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class ManagedExport:
    """What ``export_for_host`` wrote (all under ``root``)."""

    checked: CheckedAdapter
    root: Path
    adapter: Path  # the folder with exactly the host's files
    archive: Path | None  # Together: the .tar.gz to put behind a presigned URL
    instructions: Path  # UPLOAD.txt
    manifest: Path  # export.json
    name: str
    files: tuple[str, ...] = field(default=())

    @property
    def next_command(self) -> str:
        return upload_commands(self.checked, self.name)[0]


def host(key: str) -> Host:
    if key not in HOSTS:
        raise ExportRefused(f"--for {key!r}: the hosts are {', '.join(sorted(HOSTS))}")
    return HOSTS[key]


def check_for_host(
    adapter: Path, host_key: str, base_model: str | None = None, chat_template: Path | None = None
) -> CheckedAdapter:
    """Everything the host is documented to refuse, checked before anything is written. ``base_model``: the base's
    hub name when the config names a local copy of it; ``chat_template``: the training's template (Fireworks'
    chat completions need it; default ``chat_template.jinja`` in the adapter folder)."""
    target = host(host_key)
    adapter = Path(adapter)
    if not adapter.is_dir():
        raise ExportRefused(f"{adapter} is not a folder: give the trained adapter's folder (adapter_config.json ...)")
    if not (adapter / WEIGHTS).exists() and (adapter / PICKLED).exists():
        raise ExportRefused(
            f"{adapter / PICKLED}: the weights are a pickled .bin only; {target.title} needs {WEIGHTS} "
            "(convert it: PeftModel.from_pretrained(...).save_pretrained(dir, safe_serialization=True))"
        )
    try:
        check_adapter(adapter)  # the config parses, the safetensors file is there and whole
        header = check_safetensors(adapter / WEIGHTS)
    except BundleError as err:
        raise ExportRefused(str(err)) from err
    config = json.loads((adapter / CONFIG).read_text())
    where = adapter / CONFIG
    warnings: list[str] = []
    if (kind := config.get("peft_type")) != "LORA":
        raise ExportRefused(f"{where}: peft_type is {kind!r}; {target.title} serves LoRA adapters only")
    if (task := config.get("task_type")) not in (None, "CAUSAL_LM"):
        raise ExportRefused(f"{where}: task_type is {task!r}; a chat model's adapter is CAUSAL_LM")
    rank = rank_in_range(config.get("r"), "r", where, target, warnings)
    pattern = config.get("rank_pattern") or {}
    if not isinstance(pattern, dict):
        raise ExportRefused(f"{where}: rank_pattern is {pattern!r}, not a mapping of module to rank")
    ranks = {rank, *(rank_in_range(r, f"rank_pattern[{m!r}]", where, target, warnings) for m, r in pattern.items())}
    modules = config.get("target_modules")
    if not isinstance(modules, list) or not modules or not all(isinstance(m, str) for m in modules):
        raise ExportRefused(
            f"{where}: target_modules is {modules!r}; {target.title} needs a list of module names "
            f"({', '.join(sorted(target.target_modules))})"
        )
    if refused := sorted(set(modules) - target.target_modules):
        raise ExportRefused(
            f"{where}: target_modules {', '.join(refused)} not supported by {target.title}, which takes "
            f"{', '.join(sorted(target.target_modules))}: train with those (lora_target_linear on a Llama/Qwen/Mistral)"
        )
    for name, why in (
        ("modules_to_save", "whole modules (embeddings, head) trained beside the LoRA"),
        ("trainable_token_indices", "trained token embeddings"),
    ):
        if config.get(name):
            raise ExportRefused(
                f"{where}: {name} is {config[name]!r} ({why}); {target.title} documents loading LoRA matrices "
                "only, so the served model would differ from the trained one: train without it"
            )
    if config.get("use_dora"):
        raise ExportRefused(f"{where}: use_dora is true; {target.title} documents plain LoRA only (no DoRA)")
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        raise ExportRefused(f"{where}: bias/lora_bias trains biases, which {target.title} does not load")
    if config.get("use_rslora"):
        warnings.append(
            f"{where}: use_rslora is true; {target.title} does not document rsLoRA scaling (alpha/sqrt(r)): if it "
            "scales by alpha/r the served adapter is weaker than the trained one"
        )
    check_tensors(adapter / WEIGHTS, header, set(modules), ranks, target)
    base, host_base = base_models(config, where, target, base_model, warnings)
    exported = {name: config[name] for name in PLAIN_LORA_FIELDS if name in config}
    exported["base_model_name_or_path"] = base
    template = chat_template if chat_template is not None else adapter / "chat_template.jinja"
    template_text = template.read_text() if template.is_file() else None
    if target.key == "fireworks" and template_text is None:
        warnings.append(
            "no chat_template.jinja beside the adapter: fireworks.json is not written, and Fireworks documents it "
            "as what enables chat completions for an addon (Letta calls chat completions)"
        )
    return CheckedAdapter(
        host=target,
        source=adapter,
        config=exported,
        weights=adapter / WEIGHTS,
        base_model=base,
        host_base_model=host_base,
        rank=rank,
        target_modules=tuple(modules),
        chat_template=template_text if target.key == "fireworks" else None,
        warnings=tuple(warnings),
    )


def rank_in_range(value: Any, name: str, where: Path, target: Host, warnings: list[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExportRefused(f"{where}: {name} is {value!r}, not a whole number (the LoRA rank)")
    if value < target.min_rank or (target.max_rank is not None and value > target.max_rank):
        span = f"{target.min_rank} to {target.max_rank}" if target.max_rank else f"at least {target.min_rank}"
        raise ExportRefused(
            f"{where}: {name} is {value}; {target.title} takes LoRA ranks {span}: train with lora_r in it"
        )
    if target.warn_rank_above is not None and value > target.warn_rank_above:
        warnings.append(
            f"{where}: {name} is {value}; {target.title} documents no rank limit for uploads, but its own LoRA "
            f"training stops at {target.warn_rank_above} for most models: the upload may refuse it"
        )
    return value


def check_tensors(weights: Path, header: dict[str, Any], modules: set[str], ranks: set[int], target: Host) -> None:
    """Every tensor is the A or B matrix of one of the config's target modules, at one of its ranks: the config is
    what the host reads, the file what it loads, and they must tell the same story."""
    tensors = {name: spec for name, spec in header.items() if name != "__metadata__"}
    if not tensors:
        raise ExportRefused(f"{weights}: holds no tensors: not a trained adapter")
    for name, spec in tensors.items():
        match = LORA_TENSOR.match(name)
        module = match["module"] if match else ""
        if not match or not any(module == m or module.endswith(f".{m}") for m in modules):
            raise ExportRefused(
                f"{weights}: tensor {name} is not a LoRA A/B matrix of the target_modules "
                f"({', '.join(sorted(modules))}); {target.title} loads only those"
            )
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if not isinstance(shape, list) or len(shape) != 2:
            raise ExportRefused(f"{weights}: tensor {name} has shape {shape!r}, not a matrix")
        rank = shape[0] if match["half"] == "A" else shape[1]
        if rank not in ranks:
            raise ExportRefused(
                f"{weights}: tensor {name} has rank {rank} but adapter_config.json says r={min(ranks)}: "
                "the config and the weights are from different adapters"
            )


def base_models(
    config: dict[str, Any], where: Path, target: Host, override: str | None, warnings: list[str]
) -> tuple[str, str | None]:
    """The base's hub name (refused when it is a local folder and no ``override`` names it) and the host's name
    for it (None, with a warning, when we cannot name it)."""
    named = config.get("base_model_name_or_path")
    base = override or named
    if not isinstance(base, str) or not base:
        raise ExportRefused(f"{where}: base_model_name_or_path is {named!r}: give --base-model ORG/NAME (its hub name)")
    if not HUB_ID.match(base):  # an absolute or nested path; a hub name is ORG/NAME
        what = "--base-model" if override else f"{where}: base_model_name_or_path"
        raise ExportRefused(
            f"{what} is {base!r}, a local folder, not a hub model: {target.title} serves only its own copies of "
            "public base models (give --base-model ORG/NAME if that folder is a copy of one)"
        )
    host_base = target.bases.get(base)
    if host_base is None:
        look = {
            "together": "`together models list --type dedicated`; `tg beta models public --product DEDICATED`",
            "fireworks": "the model library (a base marked 'Supports LoRA'), as accounts/fireworks/models/<id>",
        }[target.key]
        warnings.append(
            f"{target.title}'s documentation does not list {base} among the bases we can name for it: check that it "
            f"serves LoRA adapters on it ({look}) and put its name where the commands say <BASE_MODEL_ID>"
        )
    return base, host_base


# --- writing ---------------------------------------------------------------------------------------------------


def export_for_host(checked: CheckedAdapter, out: Path, name: str) -> ManagedExport:
    """Write ``out`` whole (staged, then renamed): ``adapter/`` with exactly the host's files, Together's
    ``adapter.tar.gz`` (the same files at the archive root), ``UPLOAD.txt`` and ``export.json``. ``out`` must be
    new, empty or an earlier export (it is replaced); anything else is refused before a byte is written."""
    if not EXPORT_NAME.match(name):
        raise ExportRefused(
            f"--name {name!r}: use 1-63 lowercase letters, digits and hyphens, starting with a letter or digit"
        )
    out = Path(out).resolve()
    refuse_foreign_folder(out)
    with staged_dir(out) as staging:
        folder = staging / "adapter"
        folder.mkdir()
        (folder / CONFIG).write_text(json.dumps(checked.config, indent=2) + "\n")
        shutil.copyfile(checked.weights, folder / WEIGHTS)
        if checked.chat_template is not None:
            conversation = {"conversation_config": {"style": "jinja", "args": {"template": checked.chat_template}}}
            (folder / "fireworks.json").write_text(json.dumps(conversation, indent=2) + "\n")
        files = tuple(sorted(p.name for p in folder.iterdir()))
        if checked.host.archive:
            (staging / "adapter.tar.gz").write_bytes(tar_gz(folder, files))
        (staging / "UPLOAD.txt").write_text(instructions(checked, name))
        manifest = {
            "host": checked.host.key,
            "name": name,
            "source": str(checked.source),
            "base_model": checked.base_model,
            "host_base_model": checked.host_base_model,
            "rank": checked.rank,
            "target_modules": list(checked.target_modules),
            "files": list(files),
            "weights_sha256": hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest(),
            "warnings": list(checked.warnings),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_text_atomic(staging / "export.json", json.dumps(manifest, indent=2))
    return ManagedExport(
        checked=checked,
        root=out,
        adapter=out / "adapter",
        archive=out / "adapter.tar.gz" if checked.host.archive else None,
        instructions=out / "UPLOAD.txt",
        manifest=out / "export.json",
        name=name,
        files=files,
    )


def refuse_foreign_folder(out: Path) -> None:
    if out.is_file():
        raise ExportRefused(f"--out {out} is a file: give a folder for the export")
    if out.is_dir() and any(out.iterdir()) and not (out / "export.json").is_file():
        raise ExportRefused(
            f"--out {out} holds other files and is not an earlier export (no export.json): it would be replaced "
            "whole, so choose a new or empty folder"
        )


def tar_gz(folder: Path, names: tuple[str, ...]) -> bytes:
    """The files at the archive root, no folder above them (what Together asks of an S3 archive); the same bytes
    for the same files (mtime 0, no owner)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            info = tar.gettarinfo(str(folder / name), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
            with open(folder / name, "rb") as handle:
                tar.addfile(info, handle)
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def upload_commands(checked: CheckedAdapter, name: str) -> list[str]:
    """The host's commands, in order, with what we know filled in (placeholders in <ANGLE_BRACKETS>)."""
    base = checked.host_base_model or "<BASE_MODEL_ID>"
    if checked.host.key == "together":
        return [
            f'together models upload --model-name {name} --model-source "$PRESIGNED_URL" --model-type adapter '
            f"--base-model {base}",
            f"together endpoints create --model <YOUR_TOGETHER_USER>/{name} --hardware <HARDWARE_ID> "
            f"--display-name {name} --wait",
        ]
    return [
        f"firectl model create {name} adapter/ --base-model {base}",
        f"firectl deployment create accounts/<ACCOUNT_ID>/models/{name}",
    ]


def instructions(checked: CheckedAdapter, name: str) -> str:
    """UPLOAD.txt: how to get this export onto the host and the agent onto it, in our words; what the docs say and
    what nobody here ran kept apart."""
    target, commands = checked.host, upload_commands(checked, name)
    head = [
        f"{target.title}: upload this LoRA adapter and serve it ({name})",
        "",
        f"Exported from {checked.source} on {datetime.now(UTC).date().isoformat()} by `void-pipeline export-adapter`.",
        f"Base model: {checked.base_model} ({target.title}: {checked.host_base_model or '<BASE_MODEL_ID>, see below'})",
        f"LoRA rank {checked.rank}; target modules {', '.join(checked.target_modules)}.",
        "Nothing below was run against the real service by this project: the commands are from the host's",
        "documentation (sources at the end). [unverified] marks what the documentation did not show either.",
        "",
    ]
    if checked.warnings:
        head += ["Check first:", *(f"  - {w}" for w in checked.warnings), ""]
    if target.key == "together":
        steps = [
            "1. Together fetches adapters from S3 or the Hugging Face Hub, not from your disk. Put adapter.tar.gz",
            "   (adapter_config.json and adapter_model.safetensors at its root) in S3 and presign it for at least",
            "   100 minutes, e.g. with the AWS CLI:",
            f"     aws s3 cp adapter.tar.gz s3://<BUCKET>/void/{name}.tar.gz",
            f"     PRESIGNED_URL=$(aws s3 presign s3://<BUCKET>/void/{name}.tar.gz --expires-in 7200)",
            "   Or push the files of adapter/ to a private Hugging Face repository and use its URL as the source,",
            '   adding --hf-token "$HF_TOKEN".',
            "2. Upload (pip install together; export TOGETHER_API_KEY=...; newer releases call the command `tg`):",
            f"     {commands[0]}",
            "   It answers with a job id; the adapter is usable when the job has finished (dashboard: My Models).",
            "   Together keeps no versions of an adapter: a new export goes up under a new --model-name.",
            "3. Serve it on a dedicated endpoint; list the hardware for its base with `together endpoints hardware",
            f"   --model {checked.host_base_model or '<BASE_MODEL_ID>'}` [unverified: the --model value for an",
            "   uploaded adapter; the dashboard's My Models page shows the model's full name]:",
            f"     {commands[1]}",
            "   The endpoint's Name (e.g. <user>/<model>-<suffix>) is what requests put in `model`.",
            "   Or attach it to a running LoRA-enabled endpoint of the same base (dashboard: Deploy adapter to",
            "   endpoint; API: POST /v1/endpoints/<ENDPOINT_ID>/adapters).",
            "   Newer path seen only in Together's agent-skills repository (2026-08), not in the docs read here; it",
            "   says the v1 endpoints API's create now answers 403, so use it if step 3 is refused:",
            f"     tg beta models create {name} --base-model <ml_BASE_ID>",
            "     tg beta models upload <ml_ID> adapter/ --type adapter",
            f"     tg beta endpoints deploy <ml_ID> --endpoint {name}",
            "4. Point the Letta agent at it: in Letta (Cloud: bring-your-own-key Together provider; self-hosted:",
            "   TOGETHER_API_KEY in the server's environment) set the agent's model to together/<MODEL_NAME>, the name",
            "   the endpoint answers to, and its context window to the endpoint's. [unverified: whether Letta lists a",
            "   dedicated endpoint's model, and tool calling through an uploaded adapter]",
        ]
    else:
        steps = [
            "1. Upload the folder adapter/ (adapter_config.json, adapter_model.safetensors"
            + (", fireworks.json with the training's chat template" if checked.chat_template is not None else "")
            + ") with firectl:",
            f"     {commands[0]}",
            "   (older firectl releases spell it `firectl create model ...`).",
            "2. Deploy it: a LoRA addon runs only on a dedicated deployment of its base (not serverless):",
            f"     {commands[1]}",
            "   or load it onto a base deployment made with --enable-addons:",
            f"     firectl model load-lora {name} --deployment <DEPLOYMENT_ID> --wait",
            "3. Query: https://api.fireworks.ai/inference/v1 (OpenAI-compatible), model",
            f"   accounts/<ACCOUNT_ID>/models/{name}.",
            "4. Point the Letta agent at it: a self-hosted Letta server can use it as an OpenAI-compatible endpoint",
            "   (OPENAI_API_BASE=https://api.fireworks.ai/inference/v1, OPENAI_API_KEY=<FIREWORKS_API_KEY>).",
            "   [unverified: Letta Cloud's bring-your-own-key providers take no custom base URL, and we found no",
            "   Fireworks provider in Letta Cloud; tool calling through the addon; the chat template's tool support]",
        ]
    return "\n".join([*head, *steps, "", "Sources:", *(f"  {url}" for url in target.sources), ""])
