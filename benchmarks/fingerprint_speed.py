"""How long the full-value fingerprint takes on a ~300 M-parameter encoder (CLIP ViT-L/14 vision tower shapes).

References measured in the same run: cloning every tensor once (memory bandwidth) and the legacy fingerprint, which
sampled 64 values per tensor. Prints one JSON line, then a table.

    python benchmarks/fingerprint_speed.py
"""

from __future__ import annotations

import json
import time

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from taskvec_aesthetics.task_vectors.fingerprint import _legacy_fingerprint, state_fingerprint


def best_of(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14
    )
    state = CLIPVisionModel(config).state_dict()
    parameters = sum(t.numel() for t in state.values())
    size = sum(t.numel() * t.element_size() for t in state.values())
    timings = {
        "full_fingerprint_s": best_of(lambda: state_fingerprint(state)),
        "clone_all_tensors_s": best_of(lambda: [t.clone() for t in state.values()]),
        "legacy_sampled_fingerprint_s": best_of(lambda: _legacy_fingerprint(state)),
    }
    result = {
        "parameters": parameters,
        "bytes": size,
        **{k: round(v, 3) for k, v in timings.items()},
        "full_over_clone": round(timings["full_fingerprint_s"] / timings["clone_all_tensors_s"], 2),
        "hash_gb_per_s": round(size / timings["full_fingerprint_s"] / 1e9, 2),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    print(f"| what | seconds ({parameters / 1e6:.0f} M parameters, {size / 1e9:.2f} GB float32) |\n|---|---|")
    for key, value in timings.items():
        print(f"| {key} | {value:.3f} |")


if __name__ == "__main__":
    main()
