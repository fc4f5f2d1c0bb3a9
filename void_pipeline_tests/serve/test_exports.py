"""Exports for people who run the model elsewhere: the merged model as GGUF (llama.cpp's own converter, read back
with gguf-py) and an Ollama Modelfile whose template frames turns as the training chat template does.

The exported model is the tiny model itself standing in for a merged one: a merge's output is an ordinary model
folder, and the conversion takes it through the same code path. Ollama cannot be installed here (neither Debian
nor PyPI has it), so the Modelfile is checked against what the chat template writes, not run.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from void_pipeline.defs.serve.exports import gguf_export
from void_pipeline.external.export_gguf import (
    import_gguf,
    install_pre_tokenizer_fallback,
    structural_pre_tokenizer,
    tensor_problems,
)
from void_pipeline.lib import environments
from void_pipeline.lib.curate.dataset import format_row
from void_pipeline.lib.curate.reply_tool import REPLY_TOOL
from void_pipeline.lib.environments import SetupError
from void_pipeline.lib.handoffs import TrainingOutcome
from void_pipeline.lib.layout import AgentRecord, ExportPaths
from void_pipeline.lib.serve.exports import LLAMA3_STOPS, llama3_framing, ollama_modelfile, render_chat
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer
from void_pipeline_tests.support.trainer import run_trainer

SYSTEM = "You are void, an agent on Bluesky.\nAnswer mentions with the reply tool."
PROMPT = "@ada.test: what changes at scale?"
POSTS = [
    "First post of the answer: the claim.",
    'Second post, with "quotes" and a colon: the evidence.',
    "Third post 😀 the conclusion.",
]
BOS = "<|begin_of_text|>"
STOCK_TEMPLATES = {"llama-3.1": "trl/chat_templates/llama3_1.jinja", "llama-3.2": "trl/chat_templates/llama3_2.jinja"}

# The conversation as transformers renders it: the real apply_chat_template, in the trainer environment.
RENDER = """
import json, sys
from transformers import AutoTokenizer
args = json.loads(sys.stdin.read())
tokenizer = AutoTokenizer.from_pretrained(args["model"])
print(json.dumps({
    name: tokenizer.apply_chat_template(args["messages"], tools=args["tools"], chat_template=template, tokenize=False)
    for name, template in args["templates"].items()
}))
"""
# The GGUF as gguf-py reads it, independently of the export step's own read-back.
READ_GGUF = """
import json, sys
sys.path.insert(0, sys.argv[1] + "/gguf-py")
import gguf
reader = gguf.GGUFReader(sys.argv[2])
def value(key):
    field = reader.get_field(key)
    return None if field is None else field.contents()
print(json.dumps({
    "architecture": value("general.architecture"),
    "name": value("general.name"),
    "pre": value("tokenizer.ggml.pre"),
    "chat_template": value("tokenizer.chat_template"),
    "tensors": {t.name: [list(reversed(t.shape.tolist())), t.tensor_type.name] for t in reader.tensors},
}))
"""


def conversation() -> dict[str, Any]:
    """The agent loop of a three-post answer with the system prompt: what training renders."""
    return format_row({"prompt": PROMPT, "calls": POSTS, "reasoning": None}, "openai", system=SYSTEM)


def safetensors_shapes(model: Path) -> dict[str, list[int]]:
    """Tensor names and shapes from the safetensors headers (an 8-byte length, then JSON)."""
    shapes: dict[str, list[int]] = {}
    for file in model.glob("*.safetensors"):
        with file.open("rb") as weights:
            header = json.loads(weights.read(int.from_bytes(weights.read(8), "little")))
        shapes |= {name: entry["shape"] for name, entry in header.items() if name != "__metadata__"}
    return shapes


def go_template(modelfile: str) -> str:
    match = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M)
    assert match, modelfile
    return match.group(1)


@pytest.fixture(scope="module")
def converter() -> Path:
    return environments.ensure("gguf-converter")


@pytest.fixture(scope="module")
def templates(tiny_model: Path, trainer_bin: Path) -> dict[str, str]:
    """The tiny model's chat template and the stock Llama 3.1 / 3.2 ones (trl's byte-for-byte copies)."""
    site = next((trainer_bin.parent / "lib").glob("python3*/site-packages"))
    found = {"tiny": (tiny_model / "chat_template.jinja").read_text()}
    return found | {name: (site / path).read_text() for name, path in STOCK_TEMPLATES.items()}


@pytest.fixture(scope="module")
def rendered(tiny_model: Path, trainer_bin: Path, templates: dict[str, str]) -> dict[str, str]:
    row = conversation()
    payload = {"model": str(tiny_model), "messages": row["messages"], "tools": row["tools"], "templates": templates}
    result = run_trainer(trainer_bin, str(trainer_bin / "python"), "-c", RENDER, input_text=json.dumps(payload))
    assert result.returncode == 0, result.stderr[-3000:]
    out: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.integration
@pytest.mark.parametrize("name", ["tiny", "llama-3.1", "llama-3.2"])
def test_the_modelfile_frames_a_three_post_conversation_as_the_chat_template_does(
    name: str, templates: dict[str, str], rendered: dict[str, str]
) -> None:
    template, training_text = templates[name], rendered[name]
    row = conversation()
    # The framing is read with a renderer of our own (no transformers here): it renders as transformers does.
    assert render_chat(template, row["messages"], row["tools"], bos_token=BOS, eos_token="<|eot_id|>") == training_text
    # The pieces the Go template is made of write the training text exactly (JSON as tojson writes it).
    framing = llama3_framing(template, BOS)
    assert framing.render(SYSTEM, row["messages"][1:], [REPLY_TOOL]) == training_text

    export = ollama_modelfile("model-f16.gguf", template, bos_token=BOS, adds_bos=True, system=SYSTEM, num_ctx=4096)
    assert export.templated, export.note
    go = go_template(export.text)
    # Every header and turn end the chat template wrote, the system turn's own lines, the tool preamble, the call's
    # JSON frame: the same literal text in Ollama's template.
    for role in sorted(set(re.findall(r"<\|start_header_id\|>(\w+)<\|end_header_id\|>", training_text))):
        assert f"<|start_header_id|>{role}<|end_header_id|>" in go, role
    assert go.count("<|eot_id|>") >= 4 and "<|eot_id|>" in LLAMA3_STOPS
    system_lines = training_text.removeprefix(BOS).split(SYSTEM)[0]
    user_turn = training_text.split(PROMPT)[0].rsplit("<|end_header_id|>", 1)[1]
    first_tool = re.search(r'\{\s*"type": "function"', user_turn)
    assert first_tool, user_turn
    tools_preamble = user_turn[: first_tool.start()].strip()
    for literal in (system_lines, tools_preamble, '{"name": "', '", "parameters": '):
        assert literal in go, literal
    # BOS: the GGUF's tokenizer adds it (a real Llama 3.1 GGUF does), so the template must not write it again.
    assert (
        BOS not in go and BOS in ollama_modelfile("m.gguf", template, bos_token=BOS, adds_bos=False, system=None).text
    )
    # Ollama's variables for tools and calls; every block closed.
    for marker in ("{{ .System }}", "{{ if .Tools }}", "{{ range $.Tools }}", "{{ if .ToolCalls }}"):
        assert marker in go, marker
    for marker in ("{{ range .ToolCalls }}", "{{ .Function.Name }}", ".Function.Arguments }}", "{{ .Content }}"):
        assert marker in go, marker
    assert len(re.findall(r"\{\{ (?:if|range) ", go)) == go.count("{{ end }}")
    assert f'SYSTEM """{SYSTEM}"""' in export.text and "PARAMETER num_ctx 4096" in export.text
    for stop in LLAMA3_STOPS:
        assert f"PARAMETER stop {json.dumps(stop)}" in export.text


@pytest.mark.integration
def test_a_template_of_another_family_gets_a_modelfile_without_template(trainer_bin: Path) -> None:
    site = next((trainer_bin.parent / "lib").glob("python3*/site-packages"))
    qwen = (site / "trl/chat_templates/qwen2_5.jinja").read_text()
    export = ollama_modelfile("m.gguf", qwen, bos_token=None, adds_bos=False, system=SYSTEM)
    assert not export.templated and "TEMPLATE" not in export.text
    assert "Llama 3" in export.note and export.text.startswith("FROM ./m.gguf")


# --- the GGUF ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(
    tiny_model: Path, trainer_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dg.ExecuteInProcessResult, ExportPaths]:
    """gguf_export on an agent whose latest training run's merged model is the tiny model."""
    storage = PipelineStorage(root=str(tmp_path_factory.mktemp("exports")))
    layout = storage.agent_layout
    layout.write_record(AgentRecord.now("void", "did:plc:void", "void.test", "http://localhost", "http://localhost"))
    run = layout.train.run("run-1")
    shutil.copytree(tiny_model, run.merged)
    config = {"base_model": str(tiny_model), "sequence_len": 4096, "default_system_message": SYSTEM}
    run.config.write_text(yaml.safe_dump(config))
    layout.train.write_latest(TrainingOutcome(run.root, run.adapter, str(tiny_model), run.config, run.root / "data"))
    result = dg.materialize(
        [gguf_export],
        resources={
            "storage": storage,
            "trainer": Trainer(python=str(trainer_bin / "python")),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
        },
        raise_on_error=False,
    )
    return result, layout.serve.export("run-1")


@pytest.mark.integration
def test_the_merged_model_exports_to_gguf_with_a_modelfile(
    exported: tuple[dg.ExecuteInProcessResult, ExportPaths], tiny_model: Path
) -> None:
    result, export = exported
    assert result.success, [e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    metadata: dict[str, Any] = {
        k: v.value for k, v in result.asset_materializations_for_node("gguf_export")[0].metadata.items()
    }
    assert metadata["architecture"] == "llama"
    assert metadata["tensors"] == len(safetensors_shapes(tiny_model))
    assert metadata["chat_template_present"] is True
    assert metadata["gguf_path"] == str(export.gguf("f16")) and export.gguf("f16").exists()
    assert metadata["size_mb"] == round(export.gguf("f16").stat().st_size / 1e6, 2) > 0
    # the tiny tokenizer's hash is unknown to llama.cpp; its pre-tokenizer is exactly GPT-2's
    assert metadata["tokenizer_pre"] == "gpt-2 (by structure)"
    assert "token_embd.weight" in metadata["tensor_sample"]
    modelfile = export.modelfile("f16").read_text()
    assert modelfile.splitlines()[2] == "FROM ./model-f16.gguf"
    assert 'TEMPLATE """<|begin_of_text|>' in modelfile  # the tiny tokenizer adds no BOS: the template writes it
    assert f'SYSTEM """{SYSTEM}"""' in modelfile and "PARAMETER num_ctx 4096" in modelfile
    assert "FROM ./model-f16.gguf" in metadata["modelfile"]
    assert json.loads(export.report("f16").read_text())["problems"] == []


@pytest.mark.integration
def test_gguf_py_reads_back_the_models_tensors_and_chat_template(
    exported: tuple[dg.ExecuteInProcessResult, ExportPaths], tiny_model: Path, trainer_bin: Path, converter: Path
) -> None:
    _, export = exported
    command = [str(trainer_bin / "python"), "-c", READ_GGUF, str(converter), str(export.gguf("f16"))]
    result = run_trainer(trainer_bin, *command)
    assert result.returncode == 0, result.stderr[-3000:]
    gguf = json.loads(result.stdout.strip().splitlines()[-1])
    hf = safetensors_shapes(tiny_model)
    assert gguf["architecture"] == "llama" and gguf["pre"] == "gpt-2" and gguf["name"] == "void-run-1"
    assert len(gguf["tensors"]) == len(hf)
    assert gguf["tensors"]["token_embd.weight"] == [hf["model.embed_tokens.weight"], "F16"]
    assert gguf["tensors"]["output.weight"][0] == hf["lm_head.weight"]
    assert gguf["chat_template"] == (tiny_model / "chat_template.jinja").read_text()


@pytest.mark.integration
def test_q8_0_from_the_command_line(tiny_model: Path, trainer_bin: Path, converter: Path, tmp_path: Path) -> None:
    out = tmp_path / "model-q8_0.gguf"
    python = str(trainer_bin / "python")
    convert = [python, "-m", "void_pipeline.external.export_gguf", "convert", "--converter", str(converter)]
    result = run_trainer(trainer_bin, *convert, "--outtype", "q8_0", str(tiny_model), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "gguf": str(out),
        "pre": "gpt-2",
        "source": "structure",
    }
    read = run_trainer(trainer_bin, python, "-c", READ_GGUF, str(converter), str(out))
    tensors = json.loads(read.stdout.strip().splitlines()[-1])["tensors"]
    assert tensors["token_embd.weight"][1] == "Q8_0" and tensors["blk.0.attn_norm.weight"][1] == "F32"
    assert len(tensors) == len(safetensors_shapes(tiny_model))


def test_a_gguf_unlike_the_model_is_caught(converter: Path) -> None:
    """The read-back check, on a GGUF description made to be wrong (gguf-py's name map needs no torch)."""
    gguf = import_gguf(converter)
    model = {"model.embed_tokens.weight": [10, 4], "model.layers.0.self_attn.q_proj.weight": [4, 4]}
    model["lm_head.weight"] = [10, 4]
    tensors = {"token_embd.weight": [10, 4], "blk.0.attn_q.weight": [4, 8], "blk.0.attn_k.weight": [4, 4]}
    tensors["rope_freqs.weight"] = [2]  # computed by the converter: not a difference
    info = {"architecture": "llama", "block_count": 1, "tensor_count": len(tensors)}
    info["tensors"] = [{"name": name, "shape": shape} for name, shape in tensors.items()]
    assert tensor_problems(gguf, info, model) == [
        "lm_head.weight (output.weight) is not in the GGUF",
        "model.layers.0.self_attn.q_proj.weight (blk.0.attn_q.weight) is [4, 8] in the GGUF, [4, 4] in the model",
        "blk.0.attn_k.weight is in the GGUF but not in the model",
    ]
    info["tensors"] = [{"name": "token_embd.weight", "shape": [10, 4]}, {"name": "rope_freqs.weight", "shape": [2]}]
    info["tensor_count"] = 2
    assert tensor_problems(gguf, info, {"model.embed_tokens.weight": [10, 4]}) == []


# --- the pre-tokenizer fallback (no converter needed) --------------------------------------------------------

LLAMA3_PRE = {  # Llama 3's tokenizer.json, as Meta ships it
    "type": "Sequence",
    "pretokenizers": [
        {
            "type": "Split",
            "pattern": {
                "Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
                "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
            },
            "behavior": "Isolated",
            "invert": False,
        },
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
    ],
}


def tokenizer_json(pre: Any, ignore_merges: bool = False, normalizer: Any = None) -> dict[str, Any]:
    return {"normalizer": normalizer, "pre_tokenizer": pre, "model": {"type": "BPE", "ignore_merges": ignore_merges}}


@pytest.mark.integration
def test_only_exactly_known_pre_tokenizers_get_a_name(tiny_model: Path) -> None:
    tiny = json.loads((tiny_model / "tokenizer.json").read_text())
    assert structural_pre_tokenizer(tiny) == "gpt-2"
    assert structural_pre_tokenizer(tokenizer_json(LLAMA3_PRE, ignore_merges=True)) == "llama-bpe"
    assert structural_pre_tokenizer(tokenizer_json(LLAMA3_PRE, ignore_merges=False)) is None
    other_regex = json.loads(json.dumps(LLAMA3_PRE).replace("{1,3}", "+"))
    assert structural_pre_tokenizer(tokenizer_json(other_regex, ignore_merges=True)) is None
    assert structural_pre_tokenizer(tokenizer_json(LLAMA3_PRE, True, normalizer={"type": "NFC"})) is None


def test_a_tokenizer_the_converter_knows_never_reaches_the_fallback(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer_json(LLAMA3_PRE, ignore_merges=True)))

    class Converter:  # the converter's TextModel, as far as the fallback sees it
        dir_model = tmp_path
        known = True

        def get_vocab_base_pre(self, tokenizer: Any) -> str:
            if self.known:
                return "llama-bpe"
            raise NotImplementedError("BPE pre-tokenizer was not recognized - update get_vocab_base_pre()")

    decisions: dict[str, str] = {}
    install_pre_tokenizer_fallback(Converter, decisions)
    assert Converter().get_vocab_base_pre(None) == "llama-bpe" and decisions == {"pre": "llama-bpe", "source": "hash"}
    Converter.known = False
    assert Converter().get_vocab_base_pre(None) == "llama-bpe" and decisions["source"] == "structure"
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer_json({"type": "Whitespace"})))
    with pytest.raises(NotImplementedError, match="not exactly one of"):
        Converter().get_vocab_base_pre(None)


@pytest.mark.integration
def test_no_merged_model_is_a_clear_failure(tmp_path: Path, trainer_bin: Path) -> None:
    storage = PipelineStorage(root=str(tmp_path))
    layout = storage.agent_layout
    layout.write_record(AgentRecord.now("void", "did:plc:void", "void.test", "http://localhost", "http://localhost"))
    run = layout.train.run("run-1")
    run.root.mkdir(parents=True)
    layout.train.write_latest(TrainingOutcome(run.root, run.adapter, "base", run.config, run.root / "data"))
    resources = {"storage": storage, "trainer": Trainer(python=str(trainer_bin / "python"))}
    result = dg.materialize(
        [gguf_export],
        resources={**resources, "pipes_subprocess_client": dg.PipesSubprocessClient()},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data
    assert failure.user_failure_data is not None
    assert "materialize merged_model first" in str(failure.user_failure_data.description)


# --- the converter's files -----------------------------------------------------------------------------------


def test_the_converter_is_only_the_python_files_of_the_source_archive(converter: Path, tmp_path: Path) -> None:
    assert (converter / "convert_hf_to_gguf.py").exists() and (converter / "conversion" / "llama.py").exists()
    assert (converter / "gguf-py" / "gguf" / "gguf_reader.py").exists() and (converter / "LICENSE").exists()
    assert not (converter / "vendor").exists() and not list(converter.glob("*.tar.gz"))

    archive = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("convert_hf_to_gguf.py", "conversion/base.py", "gguf-py/gguf/__init__.py", "LICENSE", "src/a.cpp"):
            data = name.encode()
            info = tarfile.TarInfo(f"pkg-1.0/vendor/llama.cpp/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    spec = environments.ENVIRONMENTS["gguf-converter"]
    assert isinstance(spec, environments.SourceFiles)
    spec.unpack(archive, tmp_path / "out")
    unpacked = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert unpacked == ["LICENSE", "conversion/base.py", "convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"]
    moved = environments.SourceFiles("moved", spec.pins, (*spec.members, "vendor/llama.cpp/gone.py"), spec.strip)
    with pytest.raises(SetupError, match=r"holds no vendor/llama\.cpp/gone\.py"):
        moved.unpack(archive, tmp_path / "again")
