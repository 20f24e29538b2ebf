"""The project's settings with an in-memory layer that queues 1,000 events per channel, not 100."""

from chatproject.settings import *  # noqa: F403
from chatproject.settings import REDIS_URL

if not REDIS_URL:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}
