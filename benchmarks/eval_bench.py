"""Evaluation generations on CPU: answers per second of the tiny model, base vs LoRA, at concurrency 1 and 8.

    python benchmarks/eval_bench.py --answers 32

Builds the tiny Llama-architecture model from the synthetic corpus and a LoRA adapter for it (rank 8 on every
linear projection, random weights: serving cost does not depend on what the adapter learned), starts one vLLM
server (the cached server environment) with both, and runs the evaluation's own agent loop
(lib/evaluate/generations.py) against each. Prints every cell measured in one run, side by side, with ratios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from void_pipeline.lib import environments
from void_pipeline.lib.curate.request import direct_profile
from void_pipeline.lib.evaluate.generations import Prompt, generate
from void_pipeline.lib.layout import REPO_ROOT, EvaluationPaths
from void_pipeline.lib.serve.client import Sampling
from void_pipeline.lib.serve.vllm_server import ServerSpec, vllm_server
from void_pipeline.resources.server import InferenceServer
from void_pipeline.testworld.corpus import CorpusSpec, record_text
from void_pipeline.testworld.corpus import generate as generate_corpus
from void_pipeline.testworld.tiny_tokenizer import train_tokenizer

ADAPTER = """
import sys
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
get_peft_model(model, config).save_pretrained(sys.argv[2])
"""


def trainer(*args: str) -> None:
    python = environments.ensure("trainer") / "bin" / "python"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run([str(python), *args], env=env, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=32, help="answers per (model, concurrency) cell")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    corpus = generate_corpus(CorpusSpec(agent_posts=1000))
    texts = [record_text(r.value) for r in corpus.records]
    with tempfile.TemporaryDirectory(prefix="eval-bench-") as tmp:
        root = Path(tmp)
        tokenizer = train_tokenizer(texts, root / "tokenizer")
        trainer("-m", "void_pipeline.testworld.tiny_model", "--tokenizer", str(tokenizer), "--out", str(root / "model"))
        trainer("-c", ADAPTER, str(root / "model"), str(root / "adapter"))
        dtype, env, arguments = InferenceServer(cpu=True, max_model_len=4096).engine()
        spec = ServerSpec(str(root / "model"), {"tuned": str(root / "adapter")}, 8, "llama3_json", None, dtype,
                          4096, extra_args=tuple(arguments), env=env)  # fmt: skip
        prompts = [Prompt(f"e{i}", f"@ada.test: {texts[i]}") for i in range(args.answers)]
        sampling = Sampling(max_tokens=args.max_tokens, max_posts=1)
        results: dict[tuple[str, int], float] = {}
        with vllm_server(str(environments.ensure("server") / "bin" / "python"), spec, root / "vllm.log") as server:
            print(
                f"server up in {server.started_s:.0f} s; {args.answers} answers per cell, max {args.max_tokens} tokens"
            )
            for concurrency in (1, 8):
                for model in ("base", "tuned"):
                    paths = EvaluationPaths(root / f"{model}-{concurrency}")
                    started = time.monotonic()
                    run = generate(paths, server.base_url, server.api_key, [model], direct_profile("You are void."),
                                   prompts, sampling, concurrency, log=lambda m: None)  # fmt: skip
                    seconds = time.monotonic() - started
                    errors = run.rows["error"].drop_nulls().len()
                    tokens = int(run.rows["completion_tokens"].sum())
                    results[(model, concurrency)] = args.answers / seconds
                    print(f"  {model:<6} concurrency {concurrency}: {args.answers / seconds:6.2f} answers/s, "
                          f"{tokens / seconds:7.1f} completion tokens/s, {seconds:6.1f} s, errors {errors}")  # fmt: skip
    print("\nratios (same run):")
    for concurrency in (1, 8):
        print(
            f"  LoRA / base at concurrency {concurrency}: {results[('tuned', concurrency)] / results[('base', concurrency)]:.2f}x"
        )
    for model in ("base", "tuned"):
        print(f"  {model}: concurrency 8 / 1 = {results[(model, 8)] / results[(model, 1)]:.2f}x")


if __name__ == "__main__":
    main()
