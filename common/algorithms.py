"""The algorithms PowerNet trains, listed once: name -> the network class that implements it.

A new algorithm is one network file under `common/nets/`, its line here and its config file under
`configs/algorithms/`. The classes are named as "module:Class" and imported on first use, so reading a
config (which checks `model.algorithm` against this list) does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

NETWORK_CLASSES: dict[str, str] = {
    "powernet": "common.nets.powernet:PowerNet",
    "neurcomm": "common.nets.neurcomm:NeurComm",
    "commnet": "common.nets.commnet:CommNet",
    "dial": "common.nets.dial:DIAL",
    "consenet": "common.nets.consenet:ConseNet",
    "fprint": "common.nets.fprint:FPrint",
    "ia2c": "common.nets.ia2c:IA2C",
    "mappo": "common.nets.mappo:MAPPO",
}
ALGORITHMS: tuple[str, ...] = tuple(NETWORK_CLASSES)


def network_class(algorithm: str) -> Any:
    """The GraphActorCritic subclass of `algorithm` (a name from ALGORITHMS)."""
    module, name = NETWORK_CLASSES[algorithm].split(":")
    return getattr(import_module(module), name)
