"""Small real models and data for the extraction tests, importable by spec.

``models_for_tests:mlp`` and ``models_for_tests:cnn`` build the models (the tests put
this directory on ``PYTHONPATH``); ``models_for_tests:batches`` yields data batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


def mlp() -> nn.Module:
    """``(N, 8) → (N, 3)``; layers ``0``, ``1``, ``2``, ``3``, ``4``."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3)
    )


class SmallCNN(nn.Module):
    """``(N, 3, 8, 8) → (N, 4)``; layers ``features.*``, ``pool``, ``head``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 5, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN()


class TupleNet(nn.Module):
    """Returns ``(logits, hidden)`` and a submodule returning a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 6, batch_first=True)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seq, _ = self.rnn(x)
        return self.out(seq[:, -1]), seq


def tuplenet() -> nn.Module:
    torch.manual_seed(0)
    return TupleNet()


def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic ``(x, y)`` batches of uneven size, as a DataLoader would give."""
    gen = torch.Generator().manual_seed(1)
    for size in (7, 7, 7, 4):
        yield torch.randn(size, 8, generator=gen), torch.zeros(size)


def shuffled_batches() -> Iterator[torch.Tensor]:
    """Different samples on every call (a shuffling loader)."""
    for _ in range(3):
        yield torch.randn(5, 8)


def slow_mlp() -> nn.Module:
    """The MLP with a sleep per forward call, so a test can kill a run midway."""
    import time

    class Slow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.05)
            return self.net(x)

    return Slow()


def not_a_module() -> int:
    return 3


def slow_wide() -> nn.Module:
    """Wide layers (64- and 128-row chunks in float32), a sleep per batch: to be killed."""
    import time

    class SlowWide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.wide = nn.Linear(8, 16384)
            self.wide2 = nn.Linear(8, 8192)  # 128-row chunks: progress differs per layer
            self.net = mlp()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.04)
            self.wide(x)
            self.wide2(x)
            return self.net(x)

    return SlowWide()


def must_not_load() -> nn.Module:
    """A model spec whose loading fails loudly: for checks that must come before it."""
    raise RuntimeError("models_for_tests:must_not_load was built")
