"""Convert a merged model to GGUF with llama.cpp's own converter and read the file back (trainer environment).

    python -m void_pipeline.external.export_gguf
        the Pipes step of ``gguf_export``. Extras: ``merged`` (the model folder), ``gguf`` (the file to write),
        ``report`` (a JSON file of what was read back), ``outtype`` (f16 | q8_0), ``converter`` (the unpacked
        converter, lib/environments.py "gguf-converter"), ``run_dir``, ``failure_path``, ``watch_pids``.
    python -m void_pipeline.external.export_gguf convert --converter DIR MODEL OUTFILE [--outtype f16|q8_0]
        the conversion alone, outside Dagster.

The converter is llama.cpp's ``convert_hf_to_gguf.py`` with its ``conversion`` package and gguf-py, exactly as
llama-cpp-python's source archive ships them, run in this process (torch, transformers and safetensors come from
the trainer environment; gguf-py from the unpacked copy). One thing is added, and only where the converter gives
up: **the BPE pre-tokenizer**. llama.cpp names a BPE tokenizer's pre-tokenizer by hashing the token ids of a probe
text, so a tokenizer it has not seen before — any locally trained one, like the tests' tiny model's — is refused
("BPE pre-tokenizer was not recognized") even when its pre-tokenization is one llama.cpp implements. When the hash
is unknown, ``tokenizer.json`` is compared with the pre-tokenizers llama.cpp implements (``STRUCTURAL_PRE``): a
byte-level BPE with no normalizer whose pre-tokenizer is *exactly* GPT-2's (ByteLevel with its regex) or Llama 3's
(the Split regex then ByteLevel without one), ``ignore_merges`` as that family has it, gets that family's name
("gpt-2", "llama-bpe"), and the log says so. Anything else is refused as before. A tokenizer the converter knows
(a real Llama 3.1 8B: "llama-bpe" by its hash) never reaches the fallback.

After writing, the file is read back with ``gguf.GGUFReader`` and checked against the model's safetensors: every
tensor there is in the GGUF under its llama.cpp name with the same shape, and the GGUF has no other tensors but
the ones the converter computes itself (Llama 3's ``rope_freqs``).
"""

from __future__ import annotations

import argparse
import json
import logging
import runpy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUTTYPES = ("f16", "q8_0")
# llama.cpp's BPE pre-tokenizers that a tokenizer.json can be recognised by, when the converter's hash does not
# know it: (pre_tokenizer as tokenizer.json writes it, the BPE model's ignore_merges). The regexes are the ones
# llama.cpp's llama-vocab.cpp implements for these names (LLAMA_VOCAB_PRE_TYPE_GPT2, LLAMA_VOCAB_PRE_TYPE_LLAMA3).
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
STRUCTURAL_PRE: dict[str, tuple[dict[str, Any], bool]] = {
    "gpt-2": ({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, False),
    "llama-bpe": (
        {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False},
            ],
        },
        True,
    ),
}
# Tensors the converter computes rather than copies (so the safetensors do not hold them).
GENERATED_TENSORS = ("rope_freqs.weight",)
# Pre-tokenizers for which llama.cpp adds BOS when the file does not say (llama-vocab.cpp).
ADDS_BOS_BY_DEFAULT = ("llama3", "llama-v3", "llama-bpe")
SAMPLE_TENSORS = 6

log = logging.getLogger("void_pipeline.export_gguf")


# --- the pre-tokenizer fallback ----------------------------------------------------------------------------


def without_offsets(value: Any) -> Any:
    """A pre-tokenizer description without ``trim_offsets`` (it changes offsets, never tokens)."""
    if isinstance(value, dict):
        return {k: without_offsets(v) for k, v in value.items() if k != "trim_offsets"}
    if isinstance(value, list):
        return [without_offsets(v) for v in value]
    return value


def structural_pre_tokenizer(tokenizer: dict[str, Any]) -> str | None:
    """llama.cpp's name for this tokenizer.json's pre-tokenization when it is exactly one llama.cpp implements
    (STRUCTURAL_PRE), else None."""
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE" or tokenizer.get("normalizer") is not None:
        return None
    pre = without_offsets(tokenizer.get("pre_tokenizer"))
    for name, (expected, ignore_merges) in STRUCTURAL_PRE.items():
        if pre == expected and bool(model.get("ignore_merges", False)) == ignore_merges:
            return name
    return None


def install_pre_tokenizer_fallback(text_model: Any, decisions: dict[str, str]) -> None:
    """Wrap the converter's ``get_vocab_base_pre``: its own answer when it has one; when it refuses, the structural
    match, recorded in ``decisions`` ({"pre": name, "source": "hash" | "structure"})."""
    original = text_model.get_vocab_base_pre

    def get_vocab_base_pre(self: Any, tokenizer: Any) -> str:
        try:
            name = str(original(self, tokenizer))
        except NotImplementedError as err:
            path = Path(self.dir_model) / "tokenizer.json"
            name_found = structural_pre_tokenizer(json.loads(path.read_text())) if path.exists() else None
            if name_found is None:
                raise NotImplementedError(
                    f"{err}; and {path} is not exactly one of the pre-tokenizers llama.cpp implements "
                    f"({', '.join(STRUCTURAL_PRE)}), so there is no name to give it"
                ) from err
            log.warning(
                f"the converter does not know this tokenizer's hash; its pre-tokenizer is exactly llama.cpp's "
                f"{name_found!r} (tokenizer.json), so the GGUF says {name_found!r}"
            )
            decisions.update(pre=name_found, source="structure")
            return name_found
        decisions.update(pre=name, source="hash")
        return name

    text_model.get_vocab_base_pre = get_vocab_base_pre


# --- conversion --------------------------------------------------------------------------------------------


def import_gguf(converter: Path) -> Any:
    """gguf-py from the unpacked converter (the version the converter was written against)."""
    for folder in (converter / "gguf-py", converter):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    import gguf

    return gguf


def convert(
    converter: Path, model: Path, outfile: Path, outtype: str = "f16", name: str | None = None
) -> dict[str, str]:
    """Run llama.cpp's converter on ``model`` (a Hugging Face folder) in this process, writing ``outfile``
    (``name``: the GGUF's general.name, which runtimes show). Returns the pre-tokenizer decision ({"pre",
    "source"}; empty for tokenizers that are not BPE)."""
    if outtype not in OUTTYPES:
        raise ValueError(f"outtype {outtype!r}: use one of {', '.join(OUTTYPES)}")
    script = converter / "convert_hf_to_gguf.py"
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing: python3 -m void_pipeline.lib.environments ensure gguf-converter")
    import_gguf(converter)
    from conversion.base import TextModel  # the converter's package, from the unpacked copy

    decisions: dict[str, str] = {}
    install_pre_tokenizer_fallback(TextModel, decisions)
    namespace = runpy.run_path(str(script), run_name="convert_hf_to_gguf")  # defines main() without running it
    argv = sys.argv
    sys.argv = [str(script), str(model), "--outfile", str(outfile), "--outtype", outtype]
    sys.argv += ["--model-name", name] if name else []
    try:
        namespace["main"]()
    finally:
        sys.argv = argv
    if not outfile.exists():
        raise RuntimeError(f"the converter ended without writing {outfile}")
    return decisions


# --- reading back ------------------------------------------------------------------------------------------


def field(reader: Any, key: str) -> Any:
    found = reader.get_field(key)
    return None if found is None else found.contents()


def inspect_gguf(gguf: Any, path: Path) -> dict[str, Any]:
    """What a GGUF file says about itself: architecture, tensors (shapes in Hugging Face order), tokenizer."""
    reader = gguf.GGUFReader(str(path))
    architecture = str(field(reader, "general.architecture"))
    tensors = [
        {"name": t.name, "shape": [int(d) for d in reversed(t.shape.tolist())], "type": t.tensor_type.name}
        for t in reader.tensors
    ]
    pre = field(reader, "tokenizer.ggml.pre")
    add_bos = field(reader, "tokenizer.ggml.add_bos_token")
    tokens = field(reader, "tokenizer.ggml.tokens") or []

    def token(key: str) -> str | None:
        index = field(reader, key)
        return str(tokens[int(index)]) if index is not None and int(index) < len(tokens) else None

    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "architecture": architecture,
        "name": field(reader, "general.name"),
        "file_type": field(reader, "general.file_type"),
        "block_count": field(reader, f"{architecture}.block_count"),
        "context_length": field(reader, f"{architecture}.context_length"),
        "tensor_count": len(tensors),
        "tensors": tensors,
        "tokenizer_model": field(reader, "tokenizer.ggml.model"),
        "tokenizer_pre": pre,
        "vocab_size": len(tokens),
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        # What llama.cpp (and so Ollama) does at tokenization: the file's flag, else the pre-tokenizer's default.
        "adds_bos": bool(add_bos) if add_bos is not None else pre in ADDS_BOS_BY_DEFAULT,
        "chat_template": field(reader, "tokenizer.chat_template"),
    }


def safetensors_shapes(model: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    for file in sorted(model.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as weights:
            for name in weights.keys():  # noqa: SIM118 (safe_open is no mapping)
                shapes[name] = list(weights.get_slice(name).get_shape())
    return shapes


def tensor_problems(gguf: Any, info: dict[str, Any], hf_shapes: dict[str, list[int]]) -> list[str]:
    """Where the GGUF and the safetensors disagree: a tensor missing, renamed to nothing, of another shape, or one
    the GGUF has that the model did not."""
    arch = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == info["architecture"]), None)
    if arch is None:
        return [f"architecture {info['architecture']!r} is unknown to gguf-py"]
    names = gguf.get_tensor_name_map(arch, int(info["block_count"] or 0))
    in_gguf = {t["name"]: t["shape"] for t in info["tensors"]}
    problems, expected = [], set()
    for hf_name, shape in sorted(hf_shapes.items()):
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            problems.append(f"{hf_name} has no llama.cpp name for {info['architecture']}")
        elif name not in in_gguf:
            problems.append(f"{hf_name} ({name}) is not in the GGUF")
        elif in_gguf[name] != shape:
            problems.append(f"{hf_name} ({name}) is {in_gguf[name]} in the GGUF, {shape} in the model")
        expected.add(name)
    extra = sorted(set(in_gguf) - expected - set(GENERATED_TENSORS))
    problems += [f"{name} is in the GGUF but not in the model" for name in extra]
    generated = len(set(in_gguf) & set(GENERATED_TENSORS))
    if not problems and info["tensor_count"] != len(hf_shapes) + generated:
        problems.append(f"{info['tensor_count']} tensors in the GGUF, {len(hf_shapes)} (+{generated}) in the model")
    return problems


def summary_markdown(info: dict[str, Any], limit: int = SAMPLE_TENSORS) -> str:
    rows = ["| tensor | shape | type |", "| --- | --- | --- |"]
    rows += [f"| {t['name']} | {t['shape']} | {t['type']} |" for t in info["tensors"][:limit]]
    more = info["tensor_count"] - limit
    return "\n".join(rows + ([f"| … {more} more | | |"] if more > 0 else []))


# --- the Pipes step ----------------------------------------------------------------------------------------


def export(pipes: Any, extras: Callable[[str], Any]) -> int:
    from void_pipeline.external.train_lora import fail, lock_run_folder
    from void_pipeline.lib.files import write_text_atomic
    from void_pipeline.lib.layout import RunPaths

    merged, target, report = Path(extras("merged")), Path(extras("gguf")), Path(extras("report"))
    converter, outtype, name = Path(extras("converter")), str(extras("outtype")), extras("model_name")
    run, failure_path = RunPaths(Path(extras("run_dir"))), Path(extras("failure_path"))
    # The merged model must not be replaced (a merge of the same run) while it is read.
    if lock_run_folder(pipes, run, failure_path, f"exporting GGUF, Dagster run {pipes.run_id}") is None:
        return 3
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    pipes.log.info(f"converting {merged} to {outtype} GGUF with {converter / 'convert_hf_to_gguf.py'}")
    started = time.monotonic()
    try:
        decisions = convert(converter, merged, partial, outtype, str(name) if name else None)
    except SystemExit as err:  # the converter's own sys.exit(1) after logging why; a SIGTERM goes on unwinding
        partial.unlink(missing_ok=True)
        if err.code != 1:
            raise
        return fail(pipes, failure_path, "convert", ["the converter stopped (exit 1): its log above says why"])
    except Exception as err:
        partial.unlink(missing_ok=True)
        return fail(pipes, failure_path, "convert", [f"{type(err).__name__}: {err}"])
    seconds = time.monotonic() - started
    gguf = import_gguf(converter)
    info = inspect_gguf(gguf, partial)  # checked before it takes the export's name: a wrong file is never left there
    problems = tensor_problems(gguf, info, safetensors_shapes(merged))
    info.update(path=str(target), pre_tokenizer_source=decisions.get("source", "not BPE"))
    info.update(convert_seconds=round(seconds, 1))
    write_text_atomic(report, json.dumps({k: v for k, v in info.items() if k != "tensors"} | {"problems": problems}))
    if problems:
        partial.unlink()
        return fail(pipes, failure_path, "check", ["the GGUF does not match the model's safetensors:", *problems])
    partial.replace(target)
    pipes.log.info(f"wrote {target} ({info['bytes'] / 1e6:.1f} MB, {info['tensor_count']} tensors)")
    pipes.report_asset_materialization(
        metadata={
            "gguf_path": {"raw_value": str(target), "type": "path"},
            "size_mb": round(info["bytes"] / 1e6, 2),
            "outtype": outtype,
            "architecture": info["architecture"],
            "tensors": info["tensor_count"],
            "tensor_sample": {"raw_value": summary_markdown(info), "type": "md"},
            "tokenizer_pre": f"{info['tokenizer_pre']} (by {info['pre_tokenizer_source']})",
            "chat_template_present": bool(info["chat_template"]),
            "convert_seconds": info["convert_seconds"],
        }
    )
    return 0


def main() -> None:
    if sys.argv[1:2] == ["convert"]:
        parser = argparse.ArgumentParser(prog="python -m void_pipeline.external.export_gguf convert")
        parser.add_argument("--converter", type=Path, required=True, help="the unpacked converter folder")
        parser.add_argument("--outtype", choices=OUTTYPES, default="f16")
        parser.add_argument("--name", default=None, help="the GGUF's general.name (default: the folder's)")
        parser.add_argument("model", type=Path)
        parser.add_argument("outfile", type=Path)
        args = parser.parse_args(sys.argv[2:])
        decisions = convert(args.converter, args.model, args.outfile, args.outtype, args.name)
        print(json.dumps({"gguf": str(args.outfile), **decisions}))
        return
    from void_pipeline.external.train_lora import guarded_main

    guarded_main(lambda pipes: export(pipes, pipes.get_extra))


if __name__ == "__main__":
    main()
