"""The ``streamlife`` command (also ``python -m streamlife``).

Commands:

    diagram    write the lifecycle diagrams from the table (``--check``: write nothing, report drift)
    walk       walk a few tasks through their lifecycle, printed as a timeline
    simulate   run many streams against the simulator, faults on, and check the promises;
               ``--store URL`` journals the run's tasks there (default ``memory:``); ``--mode
               passthrough`` has audio streams forward their provider's own messages
    serve      the webhook receiver: take back the store's unfinished tasks, run their timers and
               apply memories.ai's callbacks until SIGTERM/SIGINT (``--sim``: with a simulator)
    start      start one stream (audio, video or understand) and journal it in the store
    stop       stop one stream, and wait (``--wait``) until it is terminal
    status     the tasks in the store (``--all``: the terminal ones too)
    journal    one task's history, as the store keeps it
    deadletter the webhook payloads the parser refused: ``list``, ``show ID``, ``replay [ID ...]``
               (those the parser reads now, to their tasks) and ``purge (ID ... | --all)``
    sim serve  memories.ai's simulator on a stable port (8790), in real or scaled time, faults on if
               asked, posting every callback to ``--webhook``, until SIGTERM/SIGINT
    send-callback  post one documented callback to a webhook, and show the answer

``serve``, ``start``, ``stop``, ``status``, ``journal``, ``deadletter`` and ``prune`` share one
store: ``--store``, else ``STREAMLIFE_STORE``, else ``sqlite:streamlife.db`` (in the current
directory): ``memory:``, ``sqlite:PATH``, ``postgres:DSN`` or ``postgresql://...``. ``status``,
``journal`` and ``deadletter list|show`` only read it; ``deadletter replay`` applies callbacks to
the store's tasks and sends memories.ai nothing, so it needs no API key. ``start``, ``stop`` and
``serve`` talk to memories.ai with the key in ``MEMORIES_API_KEY`` (never printed), at
``--api-url``, else ``MEMORIES_BASE_URL``, else memories.ai's own URL; a simulator (``streamlife sim
serve``, or ``serve --sim``) takes the key in ``MEMORIES_API_KEY`` too, or ``sk-mai-simulated`` when
it is not set, and ``--sim URL`` names one without needing a key. A variable that is set but empty
or invalid is bad usage naming it (see ``environment``). ``serve`` takes its webhook token from
``--token`` or ``STREAMLIFE_WEBHOOK_TOKEN``: memories.ai signs nothing, so the receiver refuses to
run without one (with ``--sim`` and neither, it makes a random one and tells only its simulator).

What others wrote (task_ids, memories.ai's messages and errors, webhook payloads, dead letters) is
printed as text, never as rich markup, and what would act on a terminal in it (escape sequences,
carriage returns, bidirectional overrides) is shown escaped: see :func:`.render.printable`. The
``--json`` outputs keep it as it came, JSON-escaped.

Exit codes: 0 success; 1 the command ran and found a problem (``diagram --check`` saw drift, a
simulated run broke an invariant or left a stream billing, a start that did not end ``running``, a
stop not terminal within its wait, no such task or dead letter in the store, a dead letter the
parser still refuses, the store failing, ``serve`` leaving tasks of a ``memory:`` store unstopped);
2 bad usage (unknown command or option, a bad value, a store URL that names no store or a store that
cannot be opened, a missing API key or webhook token, a variable set to something invalid); 130
interrupted (Ctrl-C, where the command does not take it as its cue to stop, as ``serve`` does).

Each command runs in a module of its own. ``parser`` builds the command line and names the function
that runs each command; ``app`` runs it and turns what ended it into an exit code.
"""

from .app import main

__all__ = ["main"]
