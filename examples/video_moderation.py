"""A video moderation stream: start it, handle each moderation result with a hook, stop it.

memories.ai's video moderation (``POST /stream/start``) pulls an RTMP or RTSP stream, cuts it into
5-second segments, checks each one's frames and posts one result per segment to the account's
webhook; ``POST /stream/stop`` ends it, and one last callback with status 14 ("Stream stopped by
user") follows. streamlife runs it as it runs an audio stream: the task's transcript holds one
segment per result, with no text, and ``segment.moderation`` reads the result
(``has_unsafe_content``, ``frames_processed``, ``video_url``, and the whole of ``data.data`` as
``result``, where logo detection's findings would be: the docs do not show their shape).

This runs one camera for a minute against streamlife's simulator of memories.ai, on
virtual time (the minute passes in a moment), and prints each unsafe segment as the hook sees it::

    python examples/video_moderation.py

Against memories.ai itself, the Fleet takes ``HttpTransport(api_key)`` and your webhook endpoint
hands it the callbacks: ``worker.py`` shows how.
"""

from __future__ import annotations

from streamlife import Fleet, HistoryEntry, ManualClock, Policy, Segment, StreamTask
from streamlife.sim import SimTransport, SimulatedService

CAMERA = "rtmp://example.invalid/live/lobby"  # with its stream key, if it has one: never logged


def main() -> None:
    clock = ManualClock()  # virtual time; in production the Fleet runs on the system clock
    service = SimulatedService(clock=clock)
    # stop_concurrency=0: stops go out on this thread, so the run is the same every time.
    with Fleet(SimTransport(service), clock=clock, policy=Policy(stop_concurrency=0)) as fleet:
        service.on_callback(fleet.handle_callback)  # in production: your webhook endpoint
        unsafe: list[int] = []

        @fleet.on_segment
        def moderate(task: StreamTask, segment: Segment) -> None:
            # Runs once per new result, after it was applied (a redelivered one is not new).
            result = segment.moderation
            if result is not None and result.has_unsafe_content:
                unsafe.append(segment.index or 0)
                when = f"{segment.start}-{segment.end} s"
                print(f"segment {segment.index} ({when}): unsafe, see {result.video_url}")

        @fleet.on_transition
        def report(task: StreamTask, entry: HistoryEntry) -> None:
            print(f"{entry.from_state.value} -> {entry.to_state.value} on {entry.trigger}")

        # The body is /stream/start's: url, and the documented options (fps 1 and both checks off
        # by default; max_logos 1 to 50 for logo detection). The price depends on them.
        camera = fleet.start("video", url=CAMERA, enable_content_moderation=True, fps=2)
        for _ in range(60):  # a minute; in production `with fleet.run_timers():` ticks
            service.advance(1)
            fleet.tick()

        fleet.stop(camera)
        while not camera.terminal:  # the status-14 callback is on its way
            service.advance(1)
            fleet.tick()

        results = [segment.moderation for segment in camera.transcript]
        frames = sum(result.frames_processed or 0 for result in results if result is not None)
        exposure = fleet.exposure()
        print(f"{camera.state.value}: {len(results)} segments, {frames} frames checked, unsafe in {unsafe}")
        print(f"billed: {exposure.billed_seconds} s, about ${exposure.dollars:.4f}")
        print("still billing:", service.billing())


if __name__ == "__main__":
    main()
