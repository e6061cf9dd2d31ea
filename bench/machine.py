"""How fast this machine runs the operations of the performance budget.

The goals in bench/RESULTS.md are absolute (50,000 callbacks/s in memory, 10,000/s on SQLite).
They were set beside a budget measured on the machine they were set on: ``json.loads`` of a
callback about 5 µs, a dict lookup 0.15-0.25 µs, one ``transitions`` event fire about 11 µs.
The same three, measured here in the same run, say how this machine compares: a rate measured on a
machine that runs them at twice the cost is about half the rate the same code makes on the budget's
machine. The goals are judged on the figures as measured; this scale is reported beside them, so a
reader can tell a slow machine from slow code. (The dict lookup is left out: a bare lookup measures
0.03-0.05 µs, so the budget's figure must include a call or a loop, and it cannot be taken again as
it was.)
"""

from __future__ import annotations

import json
import math
import timeit
from dataclasses import dataclass

from .common import segment_body
from .references import machine_running

# The budget, in µs, for the operations that can be taken again as they were.
BUDGET_US = {"json.loads of a callback": 5.0, "a transitions event fire": 11.0}


@dataclass
class Speed:
    measured_us: dict[str, float]  # per budget operation, best of a few runs

    @property
    def scale(self) -> float:
        """How many times the budget's cost this machine takes, as the geometric mean over the
        operations: 2.0 means it runs them at half the budget machine's speed."""
        ratios = [self.measured_us[name] / budget for name, budget in BUDGET_US.items()]
        return math.exp(sum(math.log(ratio) for ratio in ratios) / len(ratios))

    def described(self) -> str:
        said = [f"{name} {self.measured_us[name]:.2f} µs (budget {us:g})" for name, us in BUDGET_US.items()]
        return ", ".join(said)


def measure(repeat: int = 5) -> Speed:
    body = segment_body("0" * 36, 7)
    machine = machine_running()  # one Machine per task, the way the budget's fire was taken
    runs = {
        "json.loads of a callback": (lambda: json.loads(body), 20_000),
        "a transitions event fire": (machine.segment, 5_000),
    }
    measured = {
        name: min(timeit.repeat(run, number=number, repeat=repeat)) / number * 1e6
        for name, (run, number) in runs.items()
    }
    return Speed(measured)
