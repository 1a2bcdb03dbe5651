"""Prometheus metrics at ``/metrics``.

* ``clipsearch_http_request_duration_seconds{method,route,status}``: latency by
  route *template* (``/api/items/<int:item_id>``), so cardinality stays bounded;
* ``clipsearch_search_stage_seconds{stage}``: encode / search / fetch time of
  every search, as the search service measured it;
* ``clipsearch_index_vectors{table}``: vectors in each index (read at scrape
  time from the worker that answers the scrape);
* ``clipsearch_unhandled_errors_total``: requests that reached the last-resort
  500 handler (should stay 0).

Several gunicorn workers: ``clipsearch serve`` sets ``PROMETHEUS_MULTIPROC_DIR``
before any worker starts, prometheus_client then writes per-process files and a
scrape aggregates them (histograms and counters summed over workers).
"""
from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter,
                               Histogram, generate_latest)
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_LATENCY = Histogram(
    "clipsearch_http_request_duration_seconds", "HTTP request latency by route template.",
    ["method", "route", "status"], buckets=LATENCY_BUCKETS)
SEARCH_STAGE = Histogram(
    "clipsearch_search_stage_seconds", "Time of each search stage (encode, search, fetch).",
    ["stage"], buckets=LATENCY_BUCKETS)
UNHANDLED_ERRORS = Counter(
    "clipsearch_unhandled_errors_total", "Requests answered by the last-resort 500 handler.")


def observe_search(timings_ms: dict[str, float]) -> None:
    for stage in ("encode", "search", "fetch"):
        if stage in timings_ms:
            SEARCH_STAGE.labels(stage).observe(timings_ms[stage] / 1000.0)


class IndexSizeCollector:
    """Index sizes of this process's loaded library; nothing before the model is loaded."""

    def __init__(self, runtime):
        self.runtime = runtime

    def collect(self):
        fam = GaugeMetricFamily("clipsearch_index_vectors", "Vectors held by each index.",
                                labels=["table"])
        service = self.runtime.loaded_service
        if service is not None:
            for table, idx in service.library.indexes.items():
                fam.add_metric([table], float(len(idx)) if idx is not None else 0.0)
        yield fam


def _registry_output() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
        return generate_latest(reg)
    return generate_latest(REGISTRY)


def install(app: Flask, runtime) -> None:
    """Time every request and serve ``GET /metrics``."""
    sizes = CollectorRegistry(auto_describe=False)
    sizes.register(IndexSizeCollector(runtime))

    @app.before_request
    def _start_timer():
        g.request_started = time.perf_counter()

    @app.after_request
    def _observe(resp):
        started = g.pop("request_started", None)
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            REQUEST_LATENCY.labels(request.method, route, str(resp.status_code)).observe(
                time.perf_counter() - started)
        return resp

    @app.get("/metrics")
    def metrics():
        body = _registry_output() + generate_latest(sizes)
        return Response(body, mimetype=CONTENT_TYPE_LATEST)
