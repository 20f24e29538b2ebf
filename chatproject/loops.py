"""Objects kept once per asyncio event loop.

A server process runs one loop, while test runs create a loop per test,
and the tasks an object starts belong to the loop that made it. So each
such object (the publisher, the room hub, the revalidation sweep) is kept
per loop and dropped with it.
"""

import asyncio
import weakref


def for_running_loop(registry: weakref.WeakKeyDictionary, factory):
    """Return the running loop's entry in `registry`, made by `factory()` on first use."""
    loop = asyncio.get_running_loop()
    value = registry.get(loop)
    if value is None:
        value = registry[loop] = factory()
    return value
