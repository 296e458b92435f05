"""The agent's driver: the agent runner, started for one trial, one module per way, behind
`base.Driver`. Adding one: a module with a driver class that has `for_operator(services)`, and its
line in `DRIVERS` (its name is what `agentmatrix operator run --driver` takes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from agentmatrix.operator.drivers.base import Driver, Launch, Prepared, Running
from agentmatrix.operator.drivers.pod import PodDriver
from agentmatrix.operator.drivers.process import ProcessDriver

if TYPE_CHECKING:
    from agentmatrix.operator.services import Services

DRIVERS: Mapping[str, Callable[[Services], Driver]] = {
    "process": ProcessDriver.for_operator,
    "pod": PodDriver.for_operator,
}


def for_operator(name: str, services: Services) -> Driver:
    try:
        make = DRIVERS[name]
    except KeyError:
        raise ValueError(f"unknown driver {name!r}; known: {', '.join(DRIVERS)}") from None
    return make(services)


__all__ = ["DRIVERS", "Driver", "Launch", "Prepared", "Running", "for_operator"]
