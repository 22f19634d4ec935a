"""``GET /metrics``: the node's figures in the Prometheus text format (``tidings[metrics]``).

Nothing is counted for it on the hot path beyond what the server counts anyway (plain ints
on the app, node and hub; ``core/latency.py`` for latencies): a scrape reads them into a
collector of its own and renders that with ``prometheus_client``. Without the extra the
endpoint answers 501 saying which extra to install.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING, Any

from tidings.core.latency import BUCKETS, Latencies
from tidings.exceptions import HttpError
from tidings.protocol.http import Request

from .decisions import Response
from .handlers import check_api_key

if TYPE_CHECKING:
    from tidings.app import App

__all__ = ["HISTORY_CHANNELS_LIMIT", "NodeCollector", "metrics"]

# A scrape reads the history size of at most this many channels (as /stats lists them).
HISTORY_CHANNELS_LIMIT = 10000


def metrics(app: App, request: Request, rest: str = "") -> Awaitable[Response]:
    """``GET /metrics``: API key unless ``metrics_open``."""
    if not app.config.metrics_open:
        check_api_key(app, request)
    if request.method != "GET":
        raise HttpError(405, "method not allowed", [("Allow", "GET")])
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise HttpError(
            501, "metrics need prometheus_client: pip install 'tidings[metrics]'"
        ) from None
    return _scrape(app)


async def _scrape(app: App) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    node = app.node
    names = await node.broker.channels("", HISTORY_CHANNELS_LIMIT)
    infos = await node.stream_info(names) if names else {}
    stored = sum(info.stored for info in infos.values())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(app, len(infos), stored))
    return 200, generate_latest(registry), [("Content-Type", CONTENT_TYPE_LATEST)]


class NodeCollector:
    """The figures of one node at one scrape, as Prometheus metric families."""

    def __init__(self, app: App, history_channels: int, history_stored: int) -> None:
        self.app = app
        self.history_channels = history_channels
        self.history_stored = history_stored

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        app, node = self.app, self.app.node
        hub = node.hub
        yield GaugeMetricFamily(
            "tidings_uptime_seconds", "Seconds since the node started.", time.time() - node.started
        )
        conns = GaugeMetricFamily(
            "tidings_connections", "Open connections by transport.", labels=["transport"]
        )
        for kind, count in app.connection_counts().items():
            conns.add_metric([kind], count)
        yield conns
        channels = list(hub.channels())
        yield GaugeMetricFamily(
            "tidings_channels", "Channels with a subscriber on this node.", len(channels)
        )
        yield GaugeMetricFamily(
            "tidings_subscriptions",
            "Subscriptions on this node (a connection on two channels counts twice).",
            sum(hub.count(channel) for channel in channels),
        )
        yield CounterMetricFamily(
            "tidings_publications", "Publications published through this node.", node.published
        )
        yield CounterMetricFamily(
            "tidings_deliveries", "Publications handed to subscribers on this node.", hub.delivered
        )
        yield CounterMetricFamily(
            "tidings_bytes_out", "Bytes written to streaming connections.", app.bytes_out
        )
        yield CounterMetricFamily(
            "tidings_slow_disconnects",
            "Connections cut off for not reading fast enough (max_outgoing_bytes).",
            app.slow_disconnects,
        )
        ends = CounterMetricFamily(
            "tidings_disconnects",
            "Streaming connections ended, by reason and close code (0: none).",
            labels=["reason", "code"],
        )
        for (reason, code), count in sorted(app.disconnects.items()):
            ends.add_metric([reason, str(code)], count)
        yield ends
        yield _histogram(
            "tidings_command_duration_seconds",
            "Client-protocol commands, from decoded to answered, by method.",
            "method",
            node.command_latency,
        )
        yield _histogram(
            "tidings_broker_duration_seconds",
            "Awaited broker operations, by operation.",
            "operation",
            node.broker_latency,
        )
        yield GaugeMetricFamily(
            "tidings_history_channels",
            "Channels with a stream in the broker.",
            self.history_channels,
        )
        yield GaugeMetricFamily(
            "tidings_history_publications",
            "Publications held in the history of those channels.",
            self.history_stored,
        )


def _histogram(name: str, documentation: str, label: str, latencies: Latencies) -> Any:
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily(name, documentation, labels=[label])
    for key in sorted(latencies.counts):
        counts = latencies.counts[key]
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip(BUCKETS, counts, strict=False):
            total += count
            buckets.append((repr(bound), total))
        total += counts[-1]
        buckets.append(("+Inf", total))
        family.add_metric([key], buckets, latencies.sums[key])
    return family
