"""The project's settings with an in-memory layer that queues 1,000 events per channel, not 100."""

from chatproject.settings import *  # noqa: F403
from chatproject.settings import CHANNEL_LAYERS, REDIS_URL

if not REDIS_URL:
    default = CHANNEL_LAYERS["default"]
    CHANNEL_LAYERS = {"default": {**default, "CONFIG": {**default.get("CONFIG", {}), "capacity": 1000}}}
