"""Read a node's ``/metrics`` (Prometheus text format) into numbers."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["metric_value", "parse_metrics", "scrape"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample as ``{(name, sorted labels): value}``."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric_value(samples: Samples, name: str, **labels: str) -> float:
    """The value of sample ``name`` with exactly ``labels`` (0 when absent,
    as Prometheus treats a labelled counter that was never incremented)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(http: httpx.AsyncClient, base_url: str) -> Samples:
    response = await http.get(f"{base_url}/metrics")
    response.raise_for_status()
    return parse_metrics(response.text)
