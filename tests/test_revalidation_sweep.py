"""The per-process revalidation sweep visits every open socket once a period."""

import asyncio
import gc

import pytest

from messaging import consumers
from messaging.consumers import RevalidationSweep


class FakeSocket:
    def __init__(self, visits=None):
        self.posted = []
        self.visits = visits if visits is not None else []

    def post_event(self, event):
        self.posted.append(event["type"])
        self.visits.append(self)


async def wait_for_visits(visits, count, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(visits) < count and loop.time() < deadline:
        await asyncio.sleep(0.01)
    return visits[:count]


@pytest.fixture
def short_period(monkeypatch):
    monkeypatch.setattr(consumers, "REVALIDATE_SECONDS", 0.3)


async def test_every_socket_once_a_period(short_period):
    sweep = RevalidationSweep()
    visits = []
    sockets = [FakeSocket(visits) for _ in range(3)]
    started = asyncio.get_running_loop().time()
    for socket in sockets:
        sweep.add(socket)

    # Round robin, one socket every period / 3: two periods visit each twice.
    first_six = await wait_for_visits(visits, 6)
    elapsed = asyncio.get_running_loop().time() - started
    assert first_six == sockets + sockets
    assert {event for socket in sockets for event in socket.posted} == {"revalidate"}
    assert elapsed >= 0.55
    for socket in sockets:
        sweep.discard(socket)


async def test_closed_socket_is_skipped_and_released(short_period):
    sweep = RevalidationSweep()
    open_socket, closed = FakeSocket(), FakeSocket()
    sweep.add(closed)
    sweep.add(open_socket)
    sweep.discard(closed)
    closed_posted = closed.posted
    del closed
    gc.collect()

    await wait_for_visits(open_socket.visits, 2)
    assert closed_posted == []
    assert len(open_socket.posted) >= 2
    # The dead entry has left the ring; only the open socket remains.
    assert [reference() for reference in sweep.ring] == [open_socket]

    sweep.discard(open_socket)
    await asyncio.sleep(0.5)
    assert sweep.task is None
