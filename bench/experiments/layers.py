"""An in-memory channel layer whose expiry scan runs at most once a second.

channels.layers.InMemoryChannelLayer (Channels 4.3) calls _clean_expired()
on every receive() and group_send(), and that method walks every channel
queue and every group membership in the process. A fan-out to N sockets
makes N receives, so one message costs O(N x (channels + memberships)).
Expiry works in seconds (expiry=60, group_expiry=86400), so scanning once
a second expires the same messages and memberships, at most a second late.
"""

import time

from channels.layers import InMemoryChannelLayer

CLEAN_INTERVAL_SECONDS = 1.0


class ThrottledInMemoryChannelLayer(InMemoryChannelLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cleaned_at = float("-inf")

    def _clean_expired(self):
        now = time.monotonic()
        if now - self._cleaned_at < CLEAN_INTERVAL_SECONDS:
            return
        self._cleaned_at = now
        super()._clean_expired()
