"""Workload: the probe client that drives traffic through NGINX and records every request.

- ``traffic``: ``TrafficSpec`` (what to send, at which rate) and ``TrafficRun`` (an open-model
  aiohttp client in a background thread that records one ``RequestRecord`` per request).
- ``pool_load``: many clients through PgBouncer, SHOW POOLS / pg_stat_activity samplers;
- ``backend_load``: many HTTP clients on the backends' API, from a container on the lab network;
- ``jobs``: the backends' job runs and fencing rejections, read from PostgreSQL;
- ``security_probe``: answers of every kind with their headers, and the served certificate;
- ``health_watch``: one backend's health endpoints polled from a client container on the lab
  network while the steps run (``HealthSample`` with send and answer times);
NGINX's own view of the same requests (``AccessLogEntry``, joined to the client's records
through the ``X-Request-Id`` header) is parsed next to the log format it reads, in
``lab.topology.access_log``; where the clients send is ``lab.topology.client``.

``lab watch``'s live view is its own package, ``lab.watch``.
"""

from lab.topology.access_log import parse_access_log
from lab.workload.traffic import TrafficRun, TrafficSpec

__all__ = ["TrafficRun", "TrafficSpec", "parse_access_log"]
