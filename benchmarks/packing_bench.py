"""Sample packing on a 50k-example dataset: real tokens / token slots, packed vs padded, per context strategy.

    python benchmarks/packing_bench.py --examples 50000

Builds chat examples from the synthetic corpus (as curate_bench does), counts their tokens with a BPE tokenizer
trained on the corpus, adds each strategy's system prompt, and hands the lengths to axolotl's own multipack
sampler in the trainer environment (the one `sample_packing: true` uses). Prints the measurements side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.curate_bench import corpus_frames
from void_pipeline.defs.curate.assets import DEMO_SNAPSHOT
from void_pipeline.lib import environments
from void_pipeline.lib.curate.context import distilled_window, load_snapshot, trimmed_window
from void_pipeline.lib.curate.dataset import build_examples, token_lengths
from void_pipeline.lib.curate.filters import filter_records, rules_for
from void_pipeline.lib.curate.prompt import TOOL_DESCRIPTION, PromptTemplate
from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline.lib.model import TokenCounter
from void_pipeline.testworld.corpus import POST
from void_pipeline.testworld.tiny_tokenizer import train_tokenizer

# (strategy, sequence_len): the budgets the configs are written for; micro_batch_size 2 as in every config
SETUPS = (("trimmed", 8192), ("distilled", 4096), ("distilled", 8192))
MICRO_BATCH = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=50_000)
    args = parser.parse_args()
    started = time.perf_counter()
    agent_posts = int(args.examples * 1.7)  # about 0.63 examples per agent post in the corpus
    frames, context, agent_did = corpus_frames(agent_posts)
    kept = filter_records(frames[POST], rules_for(POST)).kept
    examples, _ = build_examples(kept, context, PromptTemplate.from_file(), agent_did, None)
    examples = examples.head(args.examples)
    python = environments.ensure("trainer") / "bin" / "python"
    with tempfile.TemporaryDirectory() as tmp:
        texts = [t for f in frames.values() for t in f["text"].to_list()]
        counter = TokenCounter.load(train_tokenizer(texts, Path(tmp) / "tok", vocab_size=8192))
        lengths = token_lengths(examples, counter)
        snapshot = load_snapshot(DEMO_SNAPSHOT)
        system = {
            "trimmed": trimmed_window(snapshot, counter, 8192 - 2048).tokens,
            "distilled": distilled_window(snapshot, counter, TOOL_DESCRIPTION).tokens,
        }
        print(f"{examples.height:,} examples from {agent_posts:,} agent posts ({time.perf_counter() - started:.0f} s)")
        print(f"{'strategy':<10} {'seq_len':>7} {'examples':>9} {'packed':>8} {'pad→longest':>12} {'pad→seq_len':>12}")
        for strategy, sequence_len in SETUPS:
            path = Path(tmp) / f"{strategy}.json"
            path.write_text(json.dumps([int(n) + system[strategy] for n in lengths]))
            result = subprocess.run(
                [
                    str(python),
                    str(REPO_ROOT / "benchmarks" / "multipack_efficiency.py"),
                    str(path),
                    str(sequence_len),
                    str(MICRO_BATCH),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                sys.exit(f"multipack failed:\n{result.stderr[-3000:]}")
            m = json.loads(result.stdout.strip().splitlines()[-1])
            print(
                f"{strategy:<10} {sequence_len:>7} {m['examples']:>9,} {m['packed_efficiency']:>8.1%} "
                f"{m['pad_to_longest_efficiency']:>12.1%} {m['pad_to_sequence_len_efficiency']:>12.1%}   "
                f"packed/pad→seq_len = {m['packed_efficiency'] / m['pad_to_sequence_len_efficiency']:.1f}x, "
                f"{m['bins']:,} packed rows, packing {m['pack_seconds']} s"
            )
    print("goal: packed >= 95%")


if __name__ == "__main__":
    main()
