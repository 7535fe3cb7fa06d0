"""Training objectives shared by fine-tuning, personalization and the benchmark baselines."""

from __future__ import annotations

import torch

__all__ = ["emd_loss", "pairwise_rank_loss"]


def emd_loss(distribution: torch.Tensor, target: torch.Tensor, r: float = 2.0) -> torch.Tensor:
    """Earth mover's distance between score histograms (NIMA): mean over the batch of ||CDF_p - CDF_q||_r."""
    target = target / target.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    cdf_gap = torch.cumsum(distribution, dim=-1) - torch.cumsum(target, dim=-1)
    return (cdf_gap.abs().pow(r).mean(dim=-1)).pow(1.0 / r).mean()


def pairwise_rank_loss(scores: torch.Tensor, ratings: torch.Tensor, pairing: str = "all") -> torch.Tensor:
    """Bradley-Terry loss -log sigmoid(s_i - s_j) over pairs where image i is rated above image j.

    `"all"` uses every pair with different ratings (ties are masked out, not counted); `"half"` pairs the first
    half of the batch with the second half, as the paper's official code does, with target 0.5 for ties.
    """
    if pairing == "half":
        half = scores.shape[0] // 2
        if half == 0:
            return scores.sum() * 0.0
        diff = scores[:half] - scores[half : 2 * half]
        target = (torch.sign(ratings[:half] - ratings[half : 2 * half]) + 1.0) / 2.0
        return torch.nn.functional.binary_cross_entropy_with_logits(diff, target.to(diff.dtype))
    above = ratings[:, None] > ratings[None, :]
    if not bool(above.any()):
        return scores.sum() * 0.0
    diff = scores[:, None] - scores[None, :]
    return torch.nn.functional.softplus(-diff[above]).mean()
