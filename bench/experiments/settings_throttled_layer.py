"""The project's settings with the in-memory layer's expiry scan throttled (embedded default only)."""

from chatproject.settings import *  # noqa: F403
from chatproject.settings import REDIS_URL

if not REDIS_URL:
    CHANNEL_LAYERS = {"default": {"BACKEND": "bench.experiments.layers.ThrottledInMemoryChannelLayer"}}
