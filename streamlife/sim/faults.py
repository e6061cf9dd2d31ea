"""Faults: the ways memories.ai (or the network) can misbehave, each at a rate, from one seed.

A run with the same seed and the same calls makes the same faults, so every failure found in a
simulated run can be replayed. Rates are probabilities per opportunity: per callback for the
delivery faults, per request for the answer faults, per segment for the faults of the stream itself.

Where the docs allow two readings (what a stop of an ended stream answers, what a status-16
callback means for a live stream), a fault plays the reading that costs a client the most, so a
client that survives the simulator survives either.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from typing import Self


@dataclass(frozen=True, slots=True)
class Faults:
    seed: int = 0
    # delivery of callbacks
    duplicate: float = 0.0  # the callback is delivered twice
    reorder: float = 0.0  # the callback is held back behind the next ones
    drop: float = 0.0  # the callback is never delivered
    delay: float = 0.0  # the callback arrives up to ``max_delay`` seconds late
    early_callback: float = 0.0  # a stream's first callback arrives before its start answer
    late_final: float = 0.0  # one more final segment arrives after the status-14 callback
    # answers to requests
    start_timeout_created: float = 0.0  # the start answer is lost, but the stream was created
    stop_500: float = 0.0  # stop answers 500 and the stream goes on
    stop_429: float = 0.0  # stop answers 429 with Retry-After and the stream goes on
    stop_not_found: float = 0.0  # stop answers 400 "task not found": the stream had ended silently
    capacity: float = 0.0  # start answers status 16 (capacity reached) even below the limit
    credit_start: float = 0.0  # start answers HTTP 402 "Insufficient balance"; nothing is created
    stop_ended_ok: float = 0.0  # stop of an ended stream answers 200, and no status-14 callback follows
    # the stream itself
    spontaneous_end: float = 0.0  # per segment: the service ends the stream with a non-14 status
    stall: float = 0.0  # per segment: a stream whose start was answered goes quiet, and bills on
    silent_segment: float = 0.0  # per segment: status 0 with a null transcript (segments mode, audio)
    credit_end: float = 0.0  # per segment: the stream ends for lack of credit, with a status callback
    capacity_callback: float = 0.0  # per segment: a status-16 callback, and the stream bills on
    # per segment, in passthrough: the provider's end of session (AssemblyAI's Termination, an
    # ElevenLabs error), and the stream bills on
    provider_termination: float = 0.0
    foreign: float = 0.0  # per segment: a callback of another memories.ai product, to the same webhook
    max_delay: float = 12.0
    retry_after: float = 2.0

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name in ("seed", "max_delay", "retry_after"):
                continue
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Faults.{spec.name} is a probability in [0, 1], got {value!r}")
        if self.max_delay < 0 or self.retry_after < 0:
            raise ValueError("Faults.max_delay and Faults.retry_after must not be negative")

    @classmethod
    def none(cls, seed: int = 0) -> Self:
        return cls(seed=seed)

    @classmethod
    def default(cls, seed: int = 0) -> Self:
        """A realistic bad day: a few percent of everything."""
        return cls(
            seed=seed,
            duplicate=0.05,
            reorder=0.05,
            drop=0.01,
            delay=0.05,
            early_callback=0.05,
            late_final=0.05,
            start_timeout_created=0.02,
            stop_500=0.05,
            stop_429=0.05,
            stop_not_found=0.02,
            capacity=0.02,
            spontaneous_end=0.002,
            stall=0.001,
            credit_start=0.01,
            stop_ended_ok=0.1,
            silent_segment=0.01,
            credit_end=0.001,
            capacity_callback=0.001,
            provider_termination=0.001,
            foreign=0.01,
        )

    @classmethod
    def all(cls, seed: int = 0) -> Self:
        """Every fault, often: for property tests and `--faults all`."""
        return replace(
            cls.default(seed),
            duplicate=0.2,
            reorder=0.2,
            drop=0.05,
            delay=0.2,
            early_callback=0.3,
            late_final=0.3,
            start_timeout_created=0.1,
            stop_500=0.2,
            stop_429=0.2,
            stop_not_found=0.05,
            capacity=0.05,
            spontaneous_end=0.01,
            stall=0.01,
            credit_start=0.05,
            stop_ended_ok=0.5,
            silent_segment=0.05,
            credit_end=0.005,
            capacity_callback=0.005,
            provider_termination=0.005,
            foreign=0.05,
        )

    def dice(self) -> random.Random:
        return random.Random(self.seed)
