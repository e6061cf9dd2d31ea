"""A simulator of memories.ai's stream API: in-process, on virtual time, with seeded faults."""

from ._records import Answer, Delivery, SimMode, SimStream
from .faults import Faults
from .http import SimHttpServer, WebhookPoster, serve_http
from .realtime import RealTime
from .service import SimulatedService
from .transport import SimTransport

__all__ = [
    "Answer",
    "Delivery",
    "Faults",
    "RealTime",
    "SimHttpServer",
    "SimMode",
    "SimStream",
    "SimTransport",
    "SimulatedService",
    "WebhookPoster",
    "serve_http",
]
