"""Faults (Jepsen's nemesis): inject/heal pairs that break one node or one link.

Families, as in Pumba: ``lifecycle`` (kill, stop, freeze, restart: the container itself) and
``network`` (partition, loss, throttle, latency: applied from a sidecar in the target's
network namespace). Every fault is built from a ``FaultSpec`` by ``make_fault``; healing is
idempotent, and ``heal_leftovers`` repairs what a killed run left broken.
"""

from lab.faults.base import FAULT_KINDS, Fault, FaultSpec, NoFault, make_fault
from lab.faults.network import heal_leftovers

__all__ = ["FAULT_KINDS", "Fault", "FaultSpec", "NoFault", "heal_leftovers", "make_fault"]
