"""axolotl's own multipack sampler over given example lengths (runs in the trainer environment).

    python benchmarks/multipack_efficiency.py LENGTHS.json SEQUENCE_LEN MICRO_BATCH_SIZE

Prints one JSON line: packed efficiency (real tokens / token slots), bins, and the padded alternatives.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from axolotl.utils.samplers.multipack import MultipackBatchSampler
from torch.utils.data import RandomSampler


def main() -> None:
    lengths = np.array(json.loads(Path(sys.argv[1]).read_text()), dtype=np.int32)
    sequence_len, micro_batch = int(sys.argv[2]), int(sys.argv[3])
    lengths = lengths[lengths <= sequence_len]  # axolotl drops longer examples before packing
    started = time.perf_counter()
    sampler = MultipackBatchSampler(
        RandomSampler(range(len(lengths))),
        batch_size=micro_batch,
        batch_max_len=sequence_len,
        lengths=lengths,
        bin_size=200,  # axolotl's sample_packing_bin_size default
        num_processes=2,
        drop_last=True,
    )
    batches = sampler.generate_batches(set_stats=True)
    pack_s = time.perf_counter() - started
    order = np.random.default_rng(0).permutation(len(lengths))
    per_batch = [lengths[order[i : i + micro_batch]] for i in range(0, len(order), micro_batch)]
    pad_longest = sum(int(b.sum()) for b in per_batch) / sum(int(b.max()) * len(b) for b in per_batch)
    print(
        json.dumps(
            {
                "examples": len(lengths),
                "tokens": int(lengths.sum()),
                "bins": sum(len(b) for b in batches),
                "packed_efficiency": sampler.efficiency(),
                "pad_to_longest_efficiency": pad_longest,
                "pad_to_sequence_len_efficiency": float(lengths.sum()) / (len(lengths) * sequence_len),
                "pack_seconds": round(pack_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
