"""Prometheus text from /metrics, before and after a run, turned into the figures we budget.

A `Scrape` keeps every sample by (name, labels). The difference of two scrapes is what the run
itself did; histogram quantiles are estimated from bucket differences the way Prometheus'
`histogram_quantile` does (linear inside the bucket, the highest finite bound past it).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


@dataclass
class Scrape:
    samples: dict[tuple[str, Labels], float]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return cls(samples)

    @classmethod
    def empty(cls) -> Scrape:
        return cls({})

    def minus(self, before: Scrape) -> Scrape:
        return Scrape(
            {key: value - before.samples.get(key, 0.0) for key, value in self.samples.items()}
        )

    def plus(self, other: Scrape) -> Scrape:
        merged = dict(self.samples)
        for key, value in other.samples.items():
            merged[key] = merged.get(key, 0.0) + value
        return Scrape(merged)

    def series(self, name: str) -> Iterable[tuple[dict[str, str], float]]:
        for (sample_name, labels), value in self.samples.items():
            if sample_name == name:
                yield dict(labels), value

    def total(self, name: str, where: Callable[[dict[str, str]], bool] = lambda _: True) -> float:
        return sum(value for labels, value in self.series(name) if where(labels))

    def histogram(
        self, name: str, group_by: tuple[str, ...] = ()
    ) -> dict[tuple[str, ...], Histogram]:
        """Bucket counts of histogram `name`, summed over every label not in `group_by`."""
        buckets: dict[tuple[str, ...], dict[float, float]] = defaultdict(lambda: defaultdict(float))
        sums: dict[tuple[str, ...], float] = defaultdict(float)
        for labels, value in self.series(name + "_bucket"):
            key = tuple(labels.get(g, "") for g in group_by)
            buckets[key][float(labels["le"])] += value
        for labels, value in self.series(name + "_sum"):
            sums[tuple(labels.get(g, "") for g in group_by)] += value
        return {key: Histogram(sorted(b.items()), sums[key]) for key, b in buckets.items()}


@dataclass
class Histogram:
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), ascending, +Inf last
    sum: float

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """Estimated q-quantile (NaN without observations)."""
        total = self.count
        if total <= 0:
            return math.nan
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for bound, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower_bound  # past the last finite bucket: its bound is all we know
                if cumulative == lower_count:
                    return bound
                return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                    cumulative - lower_count
                )
            lower_bound, lower_count = bound, cumulative
        return lower_bound
