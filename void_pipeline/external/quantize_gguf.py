"""Quantize a GGUF with llama-cpp-python's own quantizer (``llama_model_quantize``), in the ``llama-cpp`` environment.

    python -m void_pipeline.external.quantize_gguf SOURCE.gguf TARGET.gguf TYPE

TYPE is a llama.cpp file type without its prefix (Q8_0, Q4_K_M ...: ``LLAMA_FTYPE_MOSTLY_<TYPE>``). The file is
written under a temporary name beside TARGET and renamed when whole; on failure nothing is left. Prints one JSON
line: the type, both sizes and the seconds it took. Imports nothing of the pipeline but llama_cpp.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from pathlib import Path


def quantize(source: Path, target: Path, quant: str) -> dict[str, object]:
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}", None)
    if ftype is None:
        known = sorted(n.removeprefix("LLAMA_FTYPE_MOSTLY_") for n in dir(llama_cpp) if n.startswith("LLAMA_FTYPE_MO"))
        raise ValueError(f"llama.cpp has no quantization type {quant!r}: it knows {', '.join(known)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    started = time.monotonic()
    try:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params))
        if status != 0:
            raise RuntimeError(f"llama_model_quantize returned {status} for {source}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    seconds = round(time.monotonic() - started, 2)
    return {"type": quant, "bytes": target.stat().st_size, "source_bytes": source.stat().st_size, "seconds": seconds}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    source, target, quant = Path(argv[0]), Path(argv[1]), argv[2].upper()
    try:
        print(json.dumps(quantize(source, target, quant)))
    except (ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
