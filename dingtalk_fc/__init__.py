"""Receive DingTalk HTTP event callbacks on Aliyun Function Compute.

Handlers live in ``handlers.py`` at the project root; FC's entrypoints in ``index.py``.
"""

__version__ = "0.1.0"

from .events import Event
from .router import Router

__all__ = ["Event", "Router", "__version__"]
