"""Validate an effective axolotl config with axolotl's own validation (trainer environment).

    python -m void_pipeline.external.validate_axolotl CONFIG.yml [CONFIG.yml ...]

Prints one JSON line per config, in order: {"valid": true, ...} or {"valid": false, "errors": [...]}; exits 1 when
any is invalid (one process for several configs: axolotl's import is most of the time). Keys that
axolotl does not know are errors too (pydantic would otherwise ignore a typo silently).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def validate(path: Path) -> dict[str, Any]:
    from axolotl.utils.config import normalize_config, validate_config
    from axolotl.utils.dict import DictDefault
    from axolotl.utils.schemas.config import AxolotlInputConfig

    raw = yaml.safe_load(path.read_text())
    known = set(AxolotlInputConfig.model_fields)
    for field in AxolotlInputConfig.model_fields.values():
        if field.alias:
            known.add(field.alias)
    unknown = sorted(set(raw) - known)
    if unknown:
        return {"valid": False, "errors": [f"unknown config key: {key}" for key in unknown]}
    try:
        cfg = validate_config(DictDefault(raw))
        normalize_config(cfg)
    except Exception as err:  # axolotl raises ValueError/ValidationError and friends: report, don't crash
        return {"valid": False, "errors": [f"{type(err).__name__}: {err}"]}
    return {
        "valid": True,
        "base_model": cfg.base_model,
        "adapter": cfg.adapter,
        "sequence_len": cfg.sequence_len,
        "load_in_4bit": bool(cfg.load_in_4bit),
    }


def main() -> None:
    results = [validate(Path(arg)) for arg in sys.argv[1:]]
    for result in results:
        print(json.dumps(result))
    sys.exit(0 if results and all(r["valid"] for r in results) else 1)


if __name__ == "__main__":
    main()
