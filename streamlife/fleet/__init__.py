"""The Fleet: every stream of a process, started, stopped, fed its callbacks and timed.

``Fleet`` is the facade; the modules named with a leading underscore are its parts, private to it
(docs/architecture.md says which does what).
"""

from streamlife.lifecycle import INTERRUPTED_START, LOST_START_BODY

from ._fleet import Fleet, FleetStats
from ._orphans import Orphan

__all__ = ["INTERRUPTED_START", "LOST_START_BODY", "Fleet", "FleetStats", "Orphan"]
