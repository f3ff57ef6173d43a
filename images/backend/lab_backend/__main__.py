"""``python -m lab_backend``: read the environment, configure logging, serve."""

from __future__ import annotations

import sys

from lab_backend import logs
from lab_backend.config import ConfigurationError, Settings


def main() -> int:
    """Start the backend; exit 2 with one clear line when the configuration is unusable."""
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"lab_backend: refusing to start: {exc}", file=sys.stderr, flush=True)
        return 2
    logs.configure(settings.node_id)
    from lab_backend.server import run  # after logging, so import-time records are formatted

    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
