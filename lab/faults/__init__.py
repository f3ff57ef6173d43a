"""Faults (Jepsen's nemesis): inject/heal pairs that break one node or one link.

Families, as in Pumba: ``lifecycle`` (kill, stop, freeze, restart: the container itself),
``network`` (partition, loss, throttle, latency, reset, dns: applied from a sidecar in the
target's network namespace), ``process`` (process-stop), ``resources`` (cpu-starve) and ``store``
(evict: Redis keys removed). Every module of this package is imported here
(``lab.registry.discover``), and each registers its kinds in ``FAULTS`` with typed parameters
and the meaning it owns (its ``Effect``, whether it is still in place, how a killed run's
leftovers heal, how a timeline draws it), so a new fault is one new file. ``make_fault`` binds
a ``FaultSpec`` to a lab; healing is idempotent, and ``heal_leftovers`` repairs what a killed
run left broken. ``record`` keeps the faults in place with the lab (one labelled container
each), so any process can list them and heal them.
"""

from lab.faults.base import (
    FAULTS,
    Band,
    Fault,
    FaultDef,
    FaultParams,
    FaultSpec,
    Forgetting,
    NoFault,
    Seen,
    heal_leftovers,
    make_fault,
)
from lab.registry import discover

discover(__name__, __path__)

__all__ = ["FAULTS", "Band", "Fault", "FaultDef", "FaultParams", "FaultSpec", "Forgetting",
           "NoFault", "Seen", "heal_leftovers", "make_fault"]
