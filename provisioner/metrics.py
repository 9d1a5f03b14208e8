"""Prometheus metrics of the provisioner, on a registry of their own per process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from provisioner.models import Capacity, Node, OperationState, WorkspaceState


class Metrics:
    """The counters, histograms and gauges the edges and the runner update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "provisioner_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "provisioner_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.operation_seconds = Histogram(
            "provisioner_operation_seconds",
            "Operation run time by kind and outcome",
            ["kind", "outcome"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600),
        )
        self.operations = Gauge(
            "provisioner_operations", "Operations by state", ["state"], registry=self.registry
        )
        self.workspaces = Gauge(
            "provisioner_workspaces", "Workspaces by state", ["state"], registry=self.registry
        )
        self.node_capacity = Gauge(
            "provisioner_node_capacity",
            "Resources a node offers",
            ["node", "resource"],
            registry=self.registry,
        )
        self.node_used = Gauge(
            "provisioner_node_capacity_used",
            "Resources live workspaces take on a node",
            ["node", "resource"],
            registry=self.registry,
        )

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one HTTP answer and its latency."""
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_seconds.labels(route).observe(seconds)

    def observe_operation(self, kind: str, outcome: str, seconds: float) -> None:
        """Record how long one run of an operation took and how it ended."""
        self.operation_seconds.labels(kind, outcome).observe(seconds)

    def set_counts(
        self, operations: dict[OperationState, int], workspaces: dict[WorkspaceState, int]
    ) -> None:
        """Refresh the state gauges (queue depth is the pending count)."""
        for op_state in OperationState:
            self.operations.labels(op_state.value).set(operations.get(op_state, 0))
        for ws_state in WorkspaceState:
            self.workspaces.labels(ws_state.value).set(workspaces.get(ws_state, 0))

    def set_nodes(self, nodes: list[tuple[Node, Capacity]]) -> None:
        """Refresh each node's capacity and what is in use of it."""
        for node, used in nodes:
            for resource, total, taken in (
                ("vcpus", node.capacity.vcpus, used.vcpus),
                ("memory_mib", node.capacity.memory_mib, used.memory_mib),
                ("disk_gib", node.capacity.disk_gib, used.disk_gib),
            ):
                self.node_capacity.labels(node.name, resource).set(total)
                self.node_used.labels(node.name, resource).set(taken)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
