"""Callbacks as memories.ai sends them (and the simulator does), for tests that post them by hand."""

from __future__ import annotations

from typing import Any


def segment_callback(
    task_id: str, index: int, text: str = "hello there", *, final: bool = True
) -> dict[str, Any]:
    """A transcript callback for segment ``index``: final, or a partial with ``final=False``."""
    return {
        "code": "200",
        "message": "SUCCESS",
        "task_id": task_id,
        "data": {
            "segment_index": index,
            "segment_start_time": f"{index * 5.0:.1f}",
            "segment_end_time": f"{index * 5.0 + 5.0:.1f}",
            "status": 0,
            "message": "final",
            "transcript": {"text": text, "is_final": final},
        },
    }


def status_callback(task_id: str, status: int) -> dict[str, Any]:
    """A status callback (no transcript): 14 is "stopped by user"."""
    return {
        "code": "200",
        "message": "SUCCESS",
        "task_id": task_id,
        "data": {"segment_index": 0, "status": status, "message": "a status", "transcript": None},
    }
