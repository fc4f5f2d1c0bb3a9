"""Adapters made from a trained one by scaling its LoRA B matrices (safetensors read and written by hand: the
orchestrator environment has numpy but neither torch nor safetensors). Scale 0 gives an adapter that changes
nothing (the base model's answers); a large scale one whose answers differ from the base's."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16}


def scaled_adapter(source: Path, target: Path, scale: float) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "adapter_config.json", target / "adapter_config.json")
    data = bytearray((source / "adapter_model.safetensors").read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    start = 8 + length
    scaled = 0
    for name, tensor in header.items():
        if name == "__metadata__" or "lora_B" not in name:
            continue
        begin, end = (start + offset for offset in tensor["data_offsets"])
        values = np.frombuffer(bytes(data[begin:end]), dtype=DTYPES[tensor["dtype"]]) * scale
        data[begin:end] = values.astype(DTYPES[tensor["dtype"]]).tobytes()
        scaled += 1
    assert scaled, f"no lora_B tensor in {source}"
    (target / "adapter_model.safetensors").write_bytes(bytes(data))
    return target
