"""The Failover Lab reference backend: the service the lab's scenarios break and measure.

Modules, one concern each:

- ``config``    the environment contract (``LAB_*`` variables) as a frozen ``Settings``
- ``security``  password KDF, bearer tokens, webhook signatures (pure, stdlib ``hmac``)
- ``logs``      one line per event on stdout, always with the node id
- ``db``        the PostgreSQL pool through PgBouncer, schema, seed and queries
- ``locks``     Redis job locks with fencing tokens (``SET NX PX`` + Lua)
- ``jobs``      the scheduled jobs, aligned to wall-clock ticks, run under ``with_job_lock``
- ``app``       the Starlette application (routes, limits, readiness)
- ``server``    uvicorn run programmatically, with the SIGTERM drain
"""

__version__ = "0.1.0"
