"""evict: keys of the lab's Redis vanish now, as an eviction or an early expiry makes them.

A job lock is a lease on one key. Redis under ``maxmemory`` with an ``allkeys-*`` policy may
evict any key, the lock's included; a key expired early (an operator's EXPIRE, a failover to a
replica that never saw it) does the same. Nothing tells the holder: it runs on, and learns of
it only when its next lease extension finds the key gone, while the next node to try takes the
free lock. Two holders, with no process ever pausing (docs/semantics.md §4).

``mode: delete`` (the default) removes every key matching ``keys`` at once: an eviction.
``mode: expire`` leaves them ``ttl_ms`` to live: an early expiry, which a holder that extends
its lease first survives. Either way the fault is done at its inject: Redis runs on, the keys'
owners write them again, and the heal has nothing to undo. Matching uses Redis's own glob
(``KEYS`` inside one script: atomic, and the lab's Redis holds a few dozen keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import redis
from pydantic import Field

from lab.contract import REFERENCE_LOCK_PREFIX
from lab.errors import FaultError
from lab.faults.base import Band, FaultDef, FaultParams, FaultSpec, Seen, register
from lab.history import Effect

# The reference backend's lock keys.
DEFAULT_KEYS = REFERENCE_LOCK_PREFIX + "*"

_EVICT = """
local gone = {}
for _, key in ipairs(redis.call('KEYS', ARGV[1])) do
  local done
  if ARGV[2] == 'delete' then done = redis.call('DEL', key)
  else done = redis.call('PEXPIRE', key, ARGV[3]) end
  if done == 1 then table.insert(gone, key) end
end
return gone
"""


class EvictParams(FaultParams):
    # A Redis glob (KEYS): the reference backend's locks by default.
    keys: Annotated[str, Field(min_length=1, max_length=200)] = DEFAULT_KEYS
    mode: Literal["delete", "expire"] = "delete"
    # mode expire: what is left of each key's life.
    ttl_ms: Annotated[int, Field(gt=0, le=3_600_000)] = 100


@dataclass
class Evict:
    spec: FaultSpec
    lab: Any
    removed: tuple[str, ...] = ()       # the keys deleted at once (mode delete)

    def inject(self) -> str:
        params: EvictParams = self.spec.params  # type: ignore[assignment]
        if self.lab.roles.get(self.spec.target) != "redis":
            raise FaultError(f"evict acts on Redis: {self.spec.target} is a "
                             f"{self.lab.roles.get(self.spec.target, 'unknown')} node",
                             hint="target the lab's Redis node (redis)")
        try:
            with redis.Redis.from_url(self.lab.endpoints.redis_url, socket_timeout=5,
                                      socket_connect_timeout=2) as client:
                gone = client.eval(_EVICT, 0, params.keys, params.mode, params.ttl_ms)
        except redis.RedisError as exc:
            raise FaultError(f"could not evict {params.keys} from {self.spec.target}: {exc}",
                             hint="is Redis up? `lab status` says") from None
        names = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in gone)
        # An early expiry may yet be outrun by the holder's extension: only a delete is a loss.
        self.removed = tuple(names) if params.mode == "delete" else ()
        if not names:
            return f"no key matched {params.keys}: nothing evicted"
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        if params.mode == "delete":
            return f"evicted {shown}"
        return f"expiring {shown} in {params.ttl_ms} ms"

    def heal(self) -> str:
        return "nothing to heal: the keys' owners write them again"

    def lost_keys(self) -> tuple[str, ...]:
        return self.removed


def _done(seen: Seen) -> str:
    # The inject did the whole fault; what the keys' owners do next is what a run measures.
    return "done: evicted"


register(FaultDef(name="evict", params=EvictParams, factory=Evict, family="store",
                  in_place=_done, leftovers=None, effect=Effect(forgets=True),
                  band=Band("#e377c2", "keys evicted"),
                  summary="delete (or expire early) the Redis keys matching a pattern, the job "
                          "locks by default, as maxmemory's eviction does: the holder runs on"))
