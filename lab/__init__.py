"""Failover Lab: a local Docker replica of a production web topology, and chaos scenarios.

The tree follows the parts of a chaos test:

- ``lab.topology``: what runs (images, rendered configuration, lab up/down/status).
- ``lab.engine``: the one module that speaks to the Docker SDK.
- ``lab.faults``: inject/heal pairs (lifecycle and network faults).
- ``lab.workload``: traffic through NGINX, recorded as a history.
- ``lab.history``: the typed records every other part exchanges.
- ``lab.checks``: pure functions of a history and the rendered configuration.
- ``lab.scenarios``: scenario files, their validation and the runner.
- ``lab.report``: results on disk, as JSON and as a table.
- ``lab.cli``: the ``lab`` command.
"""

__version__ = "0.1.0"
