"""What a stream costs: memories.ai's published prices as a rate table, dated and overridable.

memories.ai bills every 5-second cycle a stream lives (``StreamTask.billed_seconds`` estimates
those seconds). The price of a second depends on the product and its options, as the pricing
sections of the start pages state them:

* audio transcription, by ``provider``: AssemblyAI $0.15 an hour, ElevenLabs $0.39 an hour (the
  current page); the older page priced its AssemblyAI-only segment mode at $1.50 an hour, and that
  rate is taken for a start that names no provider (an older streamlife's, say);
* video moderation: $1.50 an hour for content moderation or logo detection alone, $2.00 for both,
  times ``1 + (fps - 1) * 0.5`` (one frame a second by default).

Prices change: ``Rates.as_of`` says when these were read, and ``Policy(rates=Rates(...))`` takes
yours. The estimate is the client's view; memories.ai's invoice is the truth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ._events import StreamKind
from .protocol import SEGMENT_SECONDS

_HOUR: Final = 3600.0


def billed_seconds(started_at: float, ended_at: float) -> float:
    """What a stream that lived from ``started_at`` to ``ended_at`` is billed: every 5-second cycle
    begun, and at least one (the one charged at start)."""
    cycles = max(1, math.ceil((ended_at - started_at) / SEGMENT_SECONDS - 1e-9))
    return cycles * SEGMENT_SECONDS


@dataclass(frozen=True, slots=True)
class Rates:
    """US dollars per hour of stream, by product and option."""

    assemblyai: float = 0.15
    elevenlabs: float = 0.39
    audio_without_provider: float = 1.50
    video_one_feature: float = 1.50  # content moderation, or logo detection, at 1 frame a second
    video_both_features: float = 2.00  # content moderation and logo detection, at 1 frame a second
    as_of: str = "2026-12"  # when these prices were read from memories.ai's pages

    def __post_init__(self) -> None:
        for name in (
            "assemblyai",
            "elevenlabs",
            "audio_without_provider",
            "video_one_feature",
            "video_both_features",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < float("inf"):
                raise ValueError(
                    f"Rates.{name} must be dollars per hour (a finite number >= 0), got {value!r}"
                )

    def per_hour(self, kind: StreamKind, params: Mapping[str, Any] | None) -> float:
        """The hourly rate of a stream of ``kind`` started with ``params`` (its start body)."""
        params = params or {}
        if kind is StreamKind.AUDIO:
            provider = params.get("provider")
            if provider == "assemblyai":
                return self.assemblyai
            if provider == "elevenlabs":
                return self.elevenlabs
            return self.audio_without_provider
        both = params.get("enable_content_moderation") is True and params.get("enable_logo_detection") is True
        fps = params.get("fps", 1)
        if not isinstance(fps, int) or isinstance(fps, bool) or fps < 1:
            fps = 1  # (the service refuses such a start; the default rate stands for it)
        base = self.video_both_features if both else self.video_one_feature
        return base * (1 + (fps - 1) * 0.5)

    def cost(self, kind: StreamKind, params: Mapping[str, Any] | None, seconds: float) -> float:
        """Dollars for ``seconds`` of such a stream."""
        return seconds * self.per_hour(kind, params) / _HOUR


DEFAULT_RATES: Final = Rates()


@dataclass(frozen=True, slots=True)
class Exposure:
    """What a Fleet's streams have cost so far, as the client estimates it (``Fleet.exposure``)."""

    tasks: int  # tasks counted: every one the Fleet holds
    live: int  # of these, the ones whose end is not yet confirmed: they may still bill
    billed_seconds: float  # every 5-second cycle begun, summed
    dollars: float  # the same, priced by ``Policy.rates``
    rates_as_of: str
