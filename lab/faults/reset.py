"""reset: the target's links answer with TCP resets instead of carrying traffic.

What a crashing proxy, a conntrack flush or a firewall that rejects sends: every TCP segment
between the target and its peers is answered with an RST (iptables ``REJECT --reject-with
tcp-reset``), so a connect fails at once with "connection refused" and an open connection ends
with "connection reset by peer"; other protocols are dropped. Against ``partition`` (silent
drop) this is the loud failure: NGINX counts an ``error`` at once and retries it, where a drop
costs a client ``proxy_connect_timeout`` per try. The process runs on.

A network-family fault (``lab.faults.network``): applied from a sidecar in the target's
network namespace, in chains of its own (``LF_RESET_IN``/``_OUT``), healed and cleaned up after
a killed run the family's way.
"""

from __future__ import annotations

from lab.expectations import FailureMode
from lab.faults.base import Band, FaultDef, LinkParams, register
from lab.faults.network import NetworkFault, remove_sidecars, sidecar_in_place
from lab.history import Effect


class Reset(NetworkFault):
    """Answer every TCP segment on the target's links with a reset; drop the rest."""

    def inject(self) -> str:
        peers = ", ".join(self.spec.params.peers) or "all other nodes"
        # The resets themselves pass first: one answering a peer's SYN leaves through OUTPUT,
        # one answering the target's own connect comes back through INPUT, and both would
        # otherwise meet the rule that made them (and be dropped: a timeout, not a reset).
        rules = self._filter_rules("-p tcp --tcp-flags RST RST -j ACCEPT",
                                   "-p tcp -j REJECT --reject-with tcp-reset", "-j DROP")
        return self._inject(rules, f"TCP reset on the links to {peers} "
                            f"({self.spec.params.direction}); other packets dropped")

register(FaultDef(name="reset", params=LinkParams, factory=Reset, family="network",
                  in_place=sidecar_in_place, leftovers=remove_sidecars,
                  failure_mode=FailureMode.REFUSED, effect=Effect(cuts_off=True),
                  band=Band("#e377c2", "reset"),
                  summary="answer every TCP segment between the target and its peers with a "
                          "reset (iptables REJECT tcp-reset): connects refused at once, open "
                          "connections reset; other packets dropped"))
