"""What a serving bundle is made of, written by hand: a dataset folder's prompt parts and a whole LoRA adapter (a
safetensors file of one small tensor: whole as check_adapter reads it, never loaded by a server)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from void_pipeline.lib.curate.prompt import DEFAULT_TEMPLATE
from void_pipeline.lib.curate.reply_tool import REPLY_TOOL
from void_pipeline.lib.layout import DatasetPaths


def dataset(folder: Path, template: bool = True, template_text: str | None = None) -> Path:
    """A dataset folder with what a bundle copies: system prompt, tools and (unless ``template`` is False) the
    mention template (``template_text``, default: the pipeline's default template)."""
    files = DatasetPaths(folder)
    folder.mkdir(parents=True)
    files.system_prompt.write_text("You are void.")
    files.tools.write_text(json.dumps([REPLY_TOOL]))
    if template:
        files.prompt_template("format").write_text(template_text or DEFAULT_TEMPLATE.read_text())
    return folder


def safetensors(marker: bytes) -> bytes:
    """A whole safetensors file: one 2-float tensor, ``marker`` in its metadata."""
    header = json.dumps({"__metadata__": {"marker": marker.decode()},
                         "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()  # fmt: skip
    return struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0)


def adapter(folder: Path, marker: bytes, rank: int = 8) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank}))
    (folder / "adapter_model.safetensors").write_bytes(safetensors(marker))
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    (folder / "checkpoint-10").mkdir()  # training state stays with the run
    return folder
