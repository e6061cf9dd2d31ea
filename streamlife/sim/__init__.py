"""A simulator of memories.ai's stream API: in-process, on virtual time, with seeded faults."""

from .faults import Faults
from .http import SimHttpServer, serve_http
from .service import Answer, Delivery, SimStream, SimulatedService
from .transport import SimTransport

__all__ = [
    "Answer",
    "Delivery",
    "Faults",
    "SimHttpServer",
    "SimStream",
    "SimTransport",
    "SimulatedService",
    "serve_http",
]
