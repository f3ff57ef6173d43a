"""dns: the target's name lookups fail at once, or hang until the resolver gives up.

Every container of the lab resolves names through Docker's embedded DNS server at
127.0.0.11 (its port 53 is NATed inside the container's own network namespace). This fault
blocks that server from a sidecar in the target's namespace, in chains of its own
(``LF_DNS_OUT``): ``mode: fail`` rejects the queries (UDP with ICMP port unreachable, TCP with
a reset), so a lookup fails at once with a temporary failure (glibc's EAI_AGAIN); ``mode:
timeout`` drops them, so each lookup waits out the resolver (glibc: 5 s per try, two tries, as
Docker's resolv.conf leaves them). Only new lookups notice: open connections go on, an address
a process cached stays, and ``/etc/hosts`` (the container's own name) still answers.

Which nodes notice, and when, is each component's own resolution behaviour (docs/semantics.md
§5): open-source NGINX resolves its upstream names once, at start, and never again; PgBouncer
resolves ``postgres`` for a new server connection (caching answers for ``dns_max_ttl``); the
reference backends resolve ``pgbouncer`` and ``redis`` whenever their pools open a connection.
A wrong answer (a resolver that lies) is not built: it needs a DNS server of the lab's own in
front of Docker's, where this needs two iptables rules.
"""

from __future__ import annotations

from typing import Literal

from lab.faults.base import Band, FaultDef, FaultParams, register
from lab.faults.network import NetworkFault, remove_sidecars, sidecar_in_place
from lab.history import Effect

EMBEDDED_DNS = "127.0.0.11"


class DnsParams(FaultParams):
    mode: Literal["fail", "timeout"] = "fail"


class Dns(NetworkFault):
    """Block the target's queries to Docker's embedded DNS server."""

    def inject(self) -> str:
        if self.spec.params.mode == "fail":
            to = f"-d {EMBEDDED_DNS}"
            rules = self._own_rules(out=(
                f"{to} -p udp -j REJECT --reject-with icmp-port-unreachable",
                f"{to} -p tcp -j REJECT --reject-with tcp-reset"))
            return self._inject(rules, f"queries to {EMBEDDED_DNS} rejected: lookups fail "
                                       "at once")
        # The answers are dropped, not the queries: a query dropped on its way out fails its
        # sendmsg() with EPERM at once (measured: 0.004 s), which is mode fail again.
        rules = self._own_rules(in_=(f"-s {EMBEDDED_DNS} -j DROP",))
        return self._inject(rules, f"answers from {EMBEDDED_DNS} dropped: each lookup waits "
                                   "out the resolver")

register(FaultDef(name="dns", params=DnsParams, factory=Dns, family="network",
                  in_place=sidecar_in_place, leftovers=remove_sidecars,
                  effect=Effect(lookups_fail=True), band=Band("#7f7f00", "no name lookups"),
                  summary="the target's name lookups fail at once (mode fail) or hang until "
                          "the resolver gives up (mode timeout); open connections go on"))
