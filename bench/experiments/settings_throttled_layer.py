"""The project's settings with the in-memory layer's expiry scan throttled (embedded default only)."""

from chatproject.settings import *  # noqa: F403
from chatproject.settings import CHANNEL_LAYERS, REDIS_URL

if not REDIS_URL:
    # Keep the project's layer CONFIG and swap only the class.
    CHANNEL_LAYERS = {
        "default": {**CHANNEL_LAYERS["default"], "BACKEND": "bench.experiments.layers.ThrottledInMemoryChannelLayer"}
    }
