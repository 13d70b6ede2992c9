"""`GET /metrics`: Prometheus text of requests, latencies, micro-batches and jobs."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from registry import Registry

STATES = ("queued", "running", "done", "failed", "cancelled")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, reg: Registry, depth: Callable[[], int]) -> None:
        disable_created_metrics()  # no `_created` twin of every series: noise for a scraper
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "continual_http_requests",
            "HTTP requests answered",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "continual_http_request_seconds",
            "Time to answer an HTTP request",
            ("route",),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_inputs = Histogram(
            "continual_predict_batch_inputs",
            "Inputs per backbone pass (micro-batch)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "continual_predict_batch_requests",
            "Requests answered together in one micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        depth_gauge = Gauge(
            "continual_predict_queue_depth",
            "Predict requests waiting for a micro-batch",
            registry=self.registry,
        )
        depth_gauge.set_function(depth)
        self.registry.register(_Jobs(reg))

    def batch(self, requests: int, inputs: int) -> None:
        self.batch_requests.observe(requests)
        self.batch_inputs.observe(inputs)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _Jobs:
    """Jobs by state, read from the registry at each scrape (workers elsewhere count too)."""

    def __init__(self, reg: Registry) -> None:
        self.reg = reg

    def describe(self) -> list[GaugeMetricFamily]:
        return []

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        family = GaugeMetricFamily("continual_jobs", "Arrival jobs by state", labels=["state"])
        for state in STATES:
            family.add_metric([state], self.reg.queue.count(states=(state,)))
        yield family
