"""The adapter exported for a managed host (Together AI, Fireworks AI): what each host is documented to take, written
whole, and each documented refusal one line with nothing written. Adapters are built here by hand in PEFT's layout
(the orchestrator environment has no safetensors package: the file format is written with struct); every expected
value below is written out, not produced by the code under test."""

from __future__ import annotations

import io
import json
import struct
import tarfile
from pathlib import Path
from typing import Any

import pytest

from void_pipeline.cli_serve import main as serve_cli
from void_pipeline.lib.handoffs import TrainingOutcome
from void_pipeline.lib.layout import DataLayout, DatasetPaths
from void_pipeline.lib.serve.bundle import Promotion, add_bundle, make_current
from void_pipeline.lib.serve.client import Sampling
from void_pipeline.lib.serve.managed_export import ExportRefused, check_for_host, export_for_host
from void_pipeline_tests.support.cli import pipeline_cli

PROJECTIONS = ["k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "q_proj", "gate_proj"]  # PEFT's saved order
HIDDEN, INTERMEDIATE = 8, 16
TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"

# what PEFT 0.20 writes for a QLoRA run (the real tiny adapter's config, base renamed): newer fields included
PEFT_CONFIG: dict[str, Any] = {
    "alora_invocation_tokens": None, "alpha_pattern": {}, "arrow_config": None, "auto_mapping": None,
    "base_model_name_or_path": "meta-llama/Llama-3.1-8B-Instruct", "bias": "none", "corda_config": None,
    "ensure_weight_tying": False, "eva_config": None, "exclude_modules": None, "fan_in_fan_out": None,
    "inference_mode": True, "init_lora_weights": True, "layer_replication": None, "layers_pattern": None,
    "layers_to_transform": None, "loftq_config": {}, "lora_alpha": 16, "lora_bias": False, "lora_dropout": 0.05,
    "megatron_config": None, "megatron_core": "megatron.core", "modules_to_save": None, "peft_type": "LORA",
    "peft_version": "0.20.0", "qalora_group_size": 16, "r": 8, "rank_pattern": {}, "revision": None,
    "target_modules": PROJECTIONS, "target_parameters": [], "task_type": "CAUSAL_LM",
    "trainable_token_indices": None, "use_dora": False, "use_qalora": False, "use_rslora": False,
}  # fmt: skip

# the plain-LoRA fields of the above, the exported config, written out by hand
EXPORTED_CONFIG = {
    "base_model_name_or_path": "meta-llama/Llama-3.1-8B-Instruct", "peft_type": "LORA", "task_type": "CAUSAL_LM",
    "r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": PROJECTIONS, "bias": "none",
    "fan_in_fan_out": None, "inference_mode": True, "modules_to_save": None, "use_rslora": False, "use_dora": False,
    "rank_pattern": {}, "alpha_pattern": {}, "init_lora_weights": True, "revision": None,
}  # fmt: skip


def module_shape(module: str) -> tuple[str, int, int]:
    """(parent, in_features, out_features) of a Llama layer's projection at our toy sizes."""
    if module in ("gate_proj", "up_proj"):
        return "mlp", HIDDEN, INTERMEDIATE
    if module == "down_proj":
        return "mlp", INTERMEDIATE, HIDDEN
    return "self_attn", HIDDEN, HIDDEN


def lora_shapes(rank: int, modules: list[str], layers: int = 2) -> dict[str, list[int]]:
    shapes = {}
    for layer in range(layers):
        for module in modules:
            parent, in_features, out_features = module_shape(module)
            prefix = f"base_model.model.model.layers.{layer}.{parent}.{module}"
            shapes[f"{prefix}.lora_A.weight"] = [rank, in_features]
            shapes[f"{prefix}.lora_B.weight"] = [out_features, rank]
    return shapes


def safetensors_file(shapes: dict[str, list[int]]) -> bytes:
    """The safetensors layout: 8-byte little-endian header length, the JSON header, then the F32 data."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    data, offset = b"", 0
    for name, shape in shapes.items():
        count = shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * count]}
        data += struct.pack(f"<{count}f", *([0.25] * count))
        offset += 4 * count
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def peft_adapter(
    folder: Path, shapes: dict[str, list[int]] | None = None, weights_name: str = "adapter_model.safetensors",
    **changes: Any,
) -> Path:  # fmt: skip
    """What axolotl leaves in a run's adapter folder: the adapter, its chat template, and files no host wants."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({**PEFT_CONFIG, **changes}, indent=2))
    (folder / weights_name).write_bytes(safetensors_file(shapes or lora_shapes(8, PROJECTIONS)))
    (folder / "chat_template.jinja").write_text(TEMPLATE)
    for extra in ("README.md", "tokenizer.json", "config.json", "debug.log"):
        (folder / extra).write_text("{}")
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "adapter_model.safetensors").write_bytes(b"old")
    return folder


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_a_trained_adapter_goes_to_together_as_its_two_files_in_a_folder_and_at_an_archive_root(
    tmp_path: Path,
) -> None:
    adapter = peft_adapter(tmp_path / "run" / "adapter")
    checked = check_for_host(adapter, "together")
    assert checked.warnings == () and checked.host_base_model == "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
    export = export_for_host(checked, tmp_path / "out", "void-v0003")
    out = tmp_path / "out"
    assert listing(out) == ["UPLOAD.txt", "adapter.tar.gz", "adapter/adapter_config.json",
                            "adapter/adapter_model.safetensors", "export.json"]  # fmt: skip
    assert json.loads((out / "adapter/adapter_config.json").read_text()) == EXPORTED_CONFIG
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    assert (out / "adapter/adapter_model.safetensors").read_bytes() == weights
    with tarfile.open(fileobj=io.BytesIO((out / "adapter.tar.gz").read_bytes()), mode="r:gz") as tar:
        assert tar.getnames() == ["adapter_config.json", "adapter_model.safetensors"]  # at the root, no folder
        packed = tar.extractfile("adapter_model.safetensors")
        assert packed is not None and packed.read() == weights
    upload = (out / "UPLOAD.txt").read_text()
    assert (
        'together models upload --model-name void-v0003 --model-source "$PRESIGNED_URL" --model-type adapter '
        "--base-model meta-llama/Meta-Llama-3.1-8B-Instruct-Reference" in upload
    )
    assert "together endpoints create --model <YOUR_TOGETHER_USER>/void-v0003" in upload
    assert "https://docs.together.ai/docs/dedicated-endpoints/adapter" in upload
    assert export.next_command.startswith("together models upload --model-name void-v0003 ")
    manifest = json.loads((out / "export.json").read_text())
    assert (manifest["host"], manifest["rank"], manifest["files"]) == (
        "together", 8, ["adapter_config.json", "adapter_model.safetensors"])  # fmt: skip
    archive = (out / "adapter.tar.gz").read_bytes()
    again = export_for_host(check_for_host(adapter, "together"), out, "void-v0004")  # an earlier export is replaced
    assert again.name == "void-v0004" and "void-v0004" in (out / "UPLOAD.txt").read_text()
    assert (out / "adapter.tar.gz").read_bytes() == archive  # the same files make the same archive


def test_fireworks_gets_the_adapter_folder_with_the_training_chat_template_in_fireworks_json(tmp_path: Path) -> None:
    adapter = peft_adapter(tmp_path / "adapter")
    export = export_for_host(check_for_host(adapter, "fireworks"), tmp_path / "fw", "void-v0001")
    assert listing(tmp_path / "fw") == ["UPLOAD.txt", "adapter/adapter_config.json",
                                        "adapter/adapter_model.safetensors", "adapter/fireworks.json",
                                        "export.json"]  # fmt: skip
    assert json.loads((tmp_path / "fw/adapter/fireworks.json").read_text()) == {
        "conversation_config": {"style": "jinja", "args": {"template": TEMPLATE}}
    }
    assert json.loads((tmp_path / "fw/adapter/adapter_config.json").read_text()) == EXPORTED_CONFIG
    assert export.archive is None
    assert export.next_command == (
        "firectl model create void-v0001 adapter/ --base-model accounts/fireworks/models/llama-v3p1-8b-instruct"
    )
    # a base we cannot name for the host, and Together's undocumented rank range, are warnings, not refusals
    qwen = check_for_host(peft_adapter(tmp_path / "qwen", base_model_name_or_path="Qwen/Qwen2.5-7B-Instruct"),
                          "fireworks")  # fmt: skip
    assert qwen.host_base_model is None and "does not list Qwen/Qwen2.5-7B-Instruct" in qwen.warnings[0]
    big = peft_adapter(tmp_path / "big", shapes=lora_shapes(128, PROJECTIONS), r=128)
    assert "r is 128" in check_for_host(big, "together").warnings[0]
    # a local copy of a hub base, named by --base-model: the export names the hub model, not our disk
    local = peft_adapter(tmp_path / "local", base_model_name_or_path="/models/llama-3.1-8b-instruct")
    named = check_for_host(local, "together", base_model="meta-llama/Llama-3.1-8B-Instruct")
    assert named.config["base_model_name_or_path"] == "meta-llama/Llama-3.1-8B-Instruct"


def truncated(folder: Path) -> None:
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])


def bin_only(folder: Path) -> None:
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")


REFUSALS = [
    # (host, change to the adapter, the one line's expected text)
    ("fireworks", {"r": 2, "shapes": lora_shapes(2, PROJECTIONS)},
     r"adapter_config.json: r is 2; Fireworks AI takes LoRA ranks 4 to 64"),
    ("fireworks", {"r": 128, "shapes": lora_shapes(128, PROJECTIONS)},
     r"adapter_config.json: r is 128; Fireworks AI takes LoRA ranks 4 to 64"),
    ("together", {"target_modules": [*PROJECTIONS, "lm_head"]},
     r"adapter_config.json: target_modules lm_head not supported by Together AI"),
    ("fireworks", {"target_modules": "all-linear"}, r"adapter_config.json: target_modules is 'all-linear'"),
    ("together", {"modules_to_save": ["embed_tokens"]},
     r"adapter_config.json: modules_to_save is \['embed_tokens'\] \(whole modules"),
    ("fireworks", {"use_dora": True}, r"adapter_config.json: use_dora is true"),
    ("together", {"base_model_name_or_path": "/tmp/ev/tiny0/model"},
     r"adapter_config.json: base_model_name_or_path is '/tmp/ev/tiny0/model', a local folder, not a hub model"),
    ("together", {"peft_type": "IA3"}, r"adapter_config.json: peft_type is 'IA3'"),
    ("together", {"shapes": {**lora_shapes(8, PROJECTIONS), "base_model.model.model.embed_tokens.weight": [4, 8]}},
     r"adapter_model.safetensors: tensor base_model.model.model.embed_tokens.weight is not a LoRA A/B matrix"),
    ("fireworks", {"shapes": lora_shapes(16, PROJECTIONS)},
     r"adapter_model.safetensors: tensor \S+ has rank 16 but adapter_config.json says r=8"),
    ("together", {"fix": truncated}, r"adapter_model.safetensors is \d+ bytes but its header declares \d+: truncated"),
    ("together", {"fix": bin_only}, r"adapter_model.bin: the weights are a pickled .bin only; Together AI needs"),
    ("fireworks", {"fix": bin_only}, r"adapter_model.bin: the weights are a pickled .bin only; Fireworks AI needs"),
    ("together", {"fix": lambda f: (f / "adapter_model.safetensors").unlink()},
     r"adapter_model.safetensors is missing: the adapter has no weights"),
    ("fireworks", {"fix": lambda f: (f / "adapter_config.json").write_text('{"r": 8')},
     r"adapter_config.json is damaged"),
]  # fmt: skip


@pytest.mark.parametrize("host,change,message", REFUSALS, ids=[f"{h}-{i}" for i, (h, _, _) in enumerate(REFUSALS)])
def test_what_the_host_refuses_is_one_line_naming_the_file_and_field_and_nothing_is_written(
    tmp_path: Path, host: str, change: dict[str, Any], message: str
) -> None:
    change = dict(change)
    fix = change.pop("fix", None)
    adapter = peft_adapter(tmp_path / "adapter", **change)
    if fix is not None:
        fix(adapter)
    with pytest.raises(ExportRefused, match=message) as refused:
        export_for_host(check_for_host(adapter, host), tmp_path / "out", "void-v0001")
    assert "\n" not in str(refused.value) and str(adapter) in str(refused.value)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_export_adapter_takes_the_current_bundle_or_the_latest_run_and_refuses_bad_input_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, agent = tmp_path / "data", DataLayout(tmp_path / "data").agent("void")
    where = ["--data", str(data), "--agent", "void"]
    assert serve_cli(["export-adapter", "--for", "together", *where, "--out", str(tmp_path / "o")]) == 2
    assert "no adapter to export: no bundle is current" in capsys.readouterr().err
    run = agent.train.run("0f4c2d1e-aaaa")
    peft_adapter(run.adapter)
    agent.train.write_latest(TrainingOutcome(run.root, run.adapter, "base", run.config, tmp_path / "dataset"))
    done = pipeline_cli("export-adapter", "--for", "fireworks", "--data", str(data), "--out", str(tmp_path / "fw"))
    assert done.returncode == 0, done.stderr
    assert f"wrote {tmp_path / 'fw'} for Fireworks AI: {run.adapter}" in done.stdout
    assert ("next: cd {} && firectl model create void-0f4c2d1e adapter/ --base-model "
            "accounts/fireworks/models/llama-v3p1-8b-instruct").format(tmp_path / "fw") in done.stdout  # fmt: skip
    assert listing(tmp_path / "fw/adapter") == ["adapter_config.json", "adapter_model.safetensors", "fireworks.json"]
    # bad input: one line on stderr, exit 2, nothing written
    nowhere = tmp_path / "nowhere"
    for argv, line in (
        (["--for", "fireworks", "--adapter", str(nowhere)], f"error: {nowhere} is not a folder"),
        (["--for", "together", "--name", "Void_1"], "error: --name 'Void_1': use 1-63 lowercase letters"),
        (["--for", "together", "--base-model", "../models/llama"], "error: --base-model is '../models/llama', a local"),
    ):  # fmt: skip
        done = pipeline_cli("export-adapter", "--data", str(data), "--out", str(tmp_path / "bad"), *argv)
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr.startswith(line) and done.stderr.count("\n") == 1, done.stderr
    occupied = tmp_path / "home"
    (occupied / "notes.txt").parent.mkdir()
    (occupied / "notes.txt").write_text("mine")
    done = pipeline_cli("export-adapter", "--for", "together", "--data", str(data), "--out", str(occupied))
    assert done.returncode == 2 and "is not an earlier export (no export.json)" in done.stderr
    assert not (tmp_path / "bad").exists() and listing(occupied) == ["notes.txt"]
    # a current serving bundle wins over the latest run; its chat template lives beside the bundle's adapter
    dataset = DatasetPaths(tmp_path / "dataset")
    dataset.root.mkdir()
    for path, text in ((dataset.system_prompt, "You are void."), (dataset.tools, "[]"),
                       (dataset.prompt_template("format"), "{mention_text}")):  # fmt: skip
        path.write_text(text)
    promoted = peft_adapter(tmp_path / "promoted")
    bundle = add_bundle(agent.serve, Promotion("meta-llama/Llama-3.1-8B-Instruct", promoted, dataset.root, "void",
                                               "llama3_json", 8, Sampling()))  # fmt: skip
    make_current(agent.serve, bundle.version)
    assert not (bundle.paths.adapter / "chat_template.jinja").exists()
    assert serve_cli(["export-adapter", "--for", "fireworks", *where, "--out", str(tmp_path / "b")]) == 0
    assert f"for Fireworks AI: {bundle.paths.adapter} " in capsys.readouterr().out
    assert json.loads((tmp_path / "b/adapter/fireworks.json").read_text())["conversation_config"]["args"] == {
        "template": TEMPLATE
    }
    assert json.loads((tmp_path / "b/export.json").read_text())["name"] == "void-v0001"
