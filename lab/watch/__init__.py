"""``lab watch``: one running lab, live, while someone breaks it. An observer: it measures and
shows, and never judges (nothing here imports a check).

- ``model``: the typed ``Snapshot`` and the pure functions that summarise buffers into it;
- ``sampler``: ``LiveView``, a bounded probe stream through NGINX and every node's own view,
  read in the background;
- ``panels``: pure renderers, a snapshot in, rich text out;
- ``app``: the Textual screen that places the panels (``lab.cli.watch`` starts it).
"""

from lab.watch.model import Snapshot
from lab.watch.sampler import LiveView

__all__ = ["LiveView", "Snapshot"]
