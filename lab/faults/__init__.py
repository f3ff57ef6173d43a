"""Faults (Jepsen's nemesis): inject/heal pairs that break one node or one link.

Families, as in Pumba: ``lifecycle`` (kill, stop, freeze, restart: the container itself) and
``network`` (partition, loss, throttle, latency: applied from a sidecar in the target's
network namespace). Each family registers its kinds in ``FAULTS`` with typed parameters;
``make_fault`` binds a ``FaultSpec`` to a lab; healing is idempotent, and ``heal_leftovers``
repairs what a killed run left broken. ``record`` keeps the faults in place with the lab (one
labelled container each), so any process can list them and heal them.
"""

from lab.faults import lifecycle, network  # noqa: F401 - imported to register their faults
from lab.faults.base import FAULTS, Fault, FaultDef, FaultParams, FaultSpec, NoFault, make_fault
from lab.faults.network import heal_leftovers

__all__ = ["FAULTS", "Fault", "FaultDef", "FaultParams", "FaultSpec", "NoFault", "heal_leftovers",
           "make_fault"]
