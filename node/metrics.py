"""Prometheus metrics of one node (one registry per node, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NodeMetrics:
    """The figures an operator watches: height, round, commit latency, mempool, peers, rejects."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.height = Gauge("mftp_height", "Height of the newest stored block", registry=r)
        self.round = Gauge("mftp_round", "Consensus round at the current height", registry=r)
        self.ledger_size = Gauge("mftp_ledger_records", "Records in the ledger", registry=r)
        self.mempool = Gauge("mftp_mempool_records", "Records waiting in the mempool", registry=r)
        self.peers = Gauge("mftp_peers_connected", "Members this node holds a connection to", registry=r)
        self.block_interval = Histogram(
            "mftp_block_interval_seconds",
            "Time between consecutive commits seen by this node",
            buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.commit_latency = Histogram(
            "mftp_commit_latency_seconds",
            "From a record's submission to this node until its block is stored",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10),
            registry=r,
        )
        self.records_committed = Counter(
            "mftp_records_committed", "Records stored in committed blocks", registry=r
        )
        self.rejected_messages = Counter(
            "mftp_peer_messages_rejected",
            "Messages from peers dropped as malformed or invalid",
            ["peer"],
            registry=r,
        )
        self.rejected_handshakes = Gauge(
            "mftp_rejected_handshakes", "Connections refused because the peer is not a member", registry=r
        )
        self.consensus_events = Gauge(
            "mftp_consensus_events", "Counts kept by the consensus core, by kind", ["kind"], registry=r
        )
        self.blocks_synced = Counter("mftp_blocks_synced", "Blocks received by catch-up sync", registry=r)
        self.compact_proposals = Counter(
            "mftp_compact_proposals",
            "Proposals received by record ids: rebuilt from the mempool, or fetched whole",
            ["result"],
            registry=r,
        )
        self.action_errors = Counter(
            "mftp_consensus_action_errors",
            "Consensus actions that failed to be carried out (our own bugs), by kind of action",
            ["action"],
            registry=r,
        )
