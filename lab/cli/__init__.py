"""The ``lab`` command: one module per command group, wired together in ``app``."""
