"""Random cases for the checks: seeds, distinct sizes, random tensors."""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import List, Optional

import torch
from torch import Tensor

#: Set by a grading run so that hidden cases are the same on every re-grade.
SEED_ENV = "MHSA_GRADING_SEED"


def draw_seed(step: str, seed: Optional[int] = None, hidden: bool = False) -> int:
    """The seed for a check's random cases.

    An explicit ``seed`` wins. In a grading run, ``MHSA_GRADING_SEED`` makes the cases the same
    on every re-grade of the same submission (combined with the step, so steps differ).
    Otherwise each run draws fresh cases, so no fixed answer can pass them.
    """
    if seed is not None:
        return int(seed)
    base = os.environ.get(SEED_ENV)
    if base is not None:
        digest = hashlib.sha256(f"{base}:{step}:{'hidden' if hidden else 'public'}".encode()).digest()
        return int.from_bytes(digest[:4], "little")
    return secrets.randbits(31)


def distinct_sizes(gen: torch.Generator, n: int, low: int = 2, high: int = 9) -> List[int]:
    """``n`` different sizes in [low, high]: a mix-up of two axes then always shows as a shape error."""
    perm = torch.randperm(high - low + 1, generator=gen)[:n]
    return [int(p) + low for p in perm]


def randn(gen: torch.Generator, *shape: int, dtype=torch.float32, scale: float = 1.0) -> Tensor:
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
