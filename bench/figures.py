"""Repeated measurements: median [min - max], ratios against references, targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Figure:
    samples: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.samples.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    def show(self, digits: int = 0) -> str:
        if not self.samples:
            return "n/a"
        low, high = min(self.samples), max(self.samples)
        return f"{self.median:.{digits}f} [{low:.{digits}f} - {high:.{digits}f}]"


def ratio(value: Figure, reference: Figure) -> float:
    return value.median / reference.median if reference.median else float("nan")


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in 0..1)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def verdict(met: bool) -> str:
    return "met" if met else "**not met**"
