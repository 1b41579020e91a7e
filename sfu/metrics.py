"""Prometheus metrics of the media plane.

Module-level objects in prometheus-client's default registry: the server's
``GET /metrics`` (``prometheus_client.generate_latest()``) exposes them with
everything else. Updating them is a dict lookup and an add, cheap enough for
once per tick; per-packet counters are added in bulk once per tick, not per
packet.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROOMS = Gauge("disco_sfu_rooms", "Media rooms running in this process")
PARTICIPANTS = Gauge("disco_sfu_participants", "Participants with a peer connection")
TICK_SECONDS = Histogram(
    "disco_sfu_tick_seconds",
    "Time to mix, encode and hand out one 20 ms tick of one room",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.04, 0.1),
)
LATE_TICKS = Counter(
    "disco_sfu_late_ticks_total", "Ticks that started more than one frame late (CPU starved)"
)
SKIPPED_TICKS = Counter(
    "disco_sfu_skipped_ticks_total", "Ticks dropped to resynchronise after a long stall"
)
CLOCK_LAG_SECONDS = Histogram(
    "disco_sfu_clock_lag_seconds",
    "How late a room's clock woke for its tick: the event loop's lag (a packet read "
    "behind it is timed that late and deepens its sender's playout buffer)",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.1, 0.2),
)
_WAIT_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.06, 0.1, 0.2)
JITTER_WAIT_SECONDS = Histogram(
    "disco_sfu_jitter_wait_seconds",
    "Time a complete inbound voice frame waits for the mixer's tick (sampled)",
    buckets=_WAIT_BUCKETS,
)
SEND_WAIT_SECONDS = Histogram(
    "disco_sfu_send_wait_seconds",
    "Time a listener's packet waits between the tick and leaving: on the fast send path "
    "the tick's whole run (the last listener's wait), on aiortc's sender a sample of packets",
    buckets=_WAIT_BUCKETS,
)
ENCODES_PER_TICK = Histogram(
    "disco_sfu_encodes_per_tick",
    "Distinct mixes encoded per tick of a room (dedupe keeps this near talkers + 1)",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
)
ENCODES = Counter("disco_sfu_encodes_total", "Opus frames encoded by the mixer")
PACKETS_IN = Counter("disco_sfu_packets_in_total", "Decoded audio frames received")
PACKETS_OUT = Counter("disco_sfu_packets_out_total", "Audio packets handed to senders")
FRAMES_DROPPED = Counter(
    "disco_sfu_frames_dropped_total",
    "Inbound packets not played: too late for playout, or skipped to shed delay"
)
PEER_FAILURES = Counter(
    "disco_sfu_peer_failures_total", "Peer connections that failed or went silent"
)
LINK_LOSS_PERCENT = Gauge(
    "disco_sfu_link_loss_percent",
    "Packet loss of a participant's voice over the last second, in %: up = what the server "
    "received, down = what the participant's RTCP receiver reports say of the mix",
    ["room", "participant", "direction"],
)
LINK_JITTER_SECONDS = Gauge(
    "disco_sfu_link_jitter_seconds",
    "Interarrival jitter (RFC 3550) of a participant's voice: up measured by the server, "
    "down from the participant's receiver reports",
    ["room", "participant", "direction"],
)
LINK_RTT_SECONDS = Gauge(
    "disco_sfu_link_rtt_seconds", "Round-trip time to a participant (RTCP LSR/DLSR)",
    ["room", "participant"],
)
ENCODER_FEC = Gauge(
    "disco_sfu_encoders_with_fec", "Shared mix encoders with in-band FEC on (per room)", ["room"]
)
