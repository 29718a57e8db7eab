"""Gossip tuning in one dataclass, with presets like memberlist's ``config.go``.

``lan()`` is the default: 1 s beats, a crash declared dead everywhere in about
2 to 3 s (at most ``detection_bound()``, 4 s), no false suspicion at 1% loss.
``wan()`` trades speed for tolerance of long, lossy links. ``local()`` is for tests
on loopback: fast everything.
"""

from __future__ import annotations

from dataclasses import dataclass

from gossip.detector import DetectorConfig


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Every knob of the membership core; times in seconds."""

    interval: float = 1.0  # one state beat per interval
    window_min: float = 1.25  # silence tolerated before a (private) doubt, at least...
    window_max: float = 3.0  # ...and at most, whatever the jitter history says
    probe_timeout: float = 0.4  # doubt unanswered by the member and its observers -> suspect
    probe_fanout: int = 3  # other observers asked on a doubt (SWIM's indirect probes)
    suspicion_min: float = 0.4  # suspect -> dead when `confirmations` observers agree
    suspicion_max: float = 4.0  # suspect -> dead on one observer's word
    confirmations: int = 3  # Lifeguard's K
    successors: int = 3  # ring neighbours followed before the power-of-two fingers
    dc_cap: int = 32  # own-datacenter publishers followed (all, in a dc of <= dc_cap+1)
    retransmit: int = 2  # beats that repeat a news item after its immediate push
    max_news_per_beat: int = 16
    digest_grace: float = 3.0  # a digest mismatch older than this fetches a snapshot
    snapshot_cooldown: float = 5.0  # at most one snapshot fetch per this many seconds
    dead_retention: float = 60.0  # dead/left members stay listed (and beaten back) this long
    dead_follow: int = 8  # recently dead members still followed, to notice a healed partition
    leave_repeats: int = 3  # intervals during which a leaving node repeats its LEAVE
    reliable_keep: int = 256  # reliable envelopes kept for resends
    resend_give_up: float = 5.0  # a gap unrepaired this long is skipped and counted
    # Members held at most: news of one more unknown member is dropped and counted, so a
    # listed liar inventing members cannot grow the table (or the follow set) without bound.
    max_members: int = 4096
    # News may raise a member's incarnation by at most this much (2**40 ms: 35 years of
    # restarts); more is a lie meant to reach 2**64 - 1, which no refutation outranks.
    max_incarnation_jump: int = 2**40

    def detector(self) -> DetectorConfig:
        return DetectorConfig(
            interval=self.interval, window_min=self.window_min, window_max=self.window_max,
            probe_timeout=self.probe_timeout, suspicion_min=self.suspicion_min,
            suspicion_max=self.suspicion_max, confirmations=self.confirmations,
        )

    def detection_bound(self) -> float:
        """Crash -> dead at every node, worst case, when the member has more than
        ``confirmations`` observers and their probes get no answer: the longest silence
        window, the probe, the shortest suspicion, and two of the agent's ticks
        (``interval / 10``) for the timers' phases. News of the death floods in network
        hops (ms). Fewer observers (a mesh of <= ``confirmations`` + 1) wait longer: see
        ``Detector.suspect``. lan 4.0 s, wan 8.9 s, local 0.84 s."""
        return self.window_max + self.probe_timeout + self.suspicion_min + self.interval / 5

    @classmethod
    def lan(cls) -> GossipConfig:
        """One datacenter network: sub-millisecond to a few ms, rare loss."""
        return cls()

    @classmethod
    def wan(cls) -> GossipConfig:
        """Links of tens to hundreds of ms with loss: slower, more forgiving.

        Beats every 2 s (half lan's bandwidth); a lost segment costs TCP a retransmit
        (>= 200 ms), not the beat, so a 3 s window only doubts on a real stall, and a
        1 s probe leaves room for a retransmit on each of its round trips. A crash is
        dead everywhere within `detection_bound()` (8.9 s; 26.5 s before issue 4's fix)."""
        return cls(interval=2.0, window_min=3.0, window_max=6.0, probe_timeout=1.0,
                   suspicion_min=1.5, suspicion_max=10.0, digest_grace=8.0,
                   snapshot_cooldown=15.0, dead_retention=300.0)

    @classmethod
    def local(cls) -> GossipConfig:
        """Loopback tests: beats every 200 ms, a crash dead in about half a second."""
        return cls(interval=0.2, window_min=0.25, window_max=0.6, probe_timeout=0.1,
                   suspicion_min=0.1, suspicion_max=1.0, digest_grace=0.6,
                   snapshot_cooldown=1.0, dead_retention=10.0, resend_give_up=1.0)
