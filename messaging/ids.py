"""Globally unique, time-ordered 64-bit message ids.

Layout (most significant bit first, the sign bit always 0 so the id fits a
signed BIGINT):

    41 bits  milliseconds since ID_EPOCH_MS (about 69 years of range)
    10 bits  worker id, one per server process (0-1023)
    12 bits  counter within the millisecond (4096 ids per ms per worker)

Two processes never share a worker id while both hold it: a process either
takes CHAT_WORKER_ID from its environment (a StatefulSet ordinal, say) or
leases a free id from the main database and renews the lease as it issues
ids. Within a process the timestamp never goes backwards: when the clock
steps back, ids continue from the last timestamp issued, and the lease
stores that timestamp so a restarted process does not reuse it either.
"""

import atexit
import logging
import os
import random
import socket
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Q
from django.utils import timezone

logger = logging.getLogger(__name__)

ID_EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
WORKER_BITS = 10
COUNTER_BITS = 12
MAX_WORKER_ID = (1 << WORKER_BITS) - 1
MAX_COUNTER = (1 << COUNTER_BITS) - 1
LEASE_SECONDS = 600
RENEW_AFTER_SECONDS = 60


def compose_id(timestamp_ms: int, worker_id: int, counter: int) -> int:
    return ((timestamp_ms - ID_EPOCH_MS) << (WORKER_BITS + COUNTER_BITS)) | (worker_id << COUNTER_BITS) | counter


def split_id(message_id: int) -> tuple[int, int, int]:
    """Return (timestamp_ms, worker_id, counter) of an id."""
    counter = message_id & MAX_COUNTER
    worker_id = (message_id >> COUNTER_BITS) & MAX_WORKER_ID
    timestamp_ms = (message_id >> (WORKER_BITS + COUNTER_BITS)) + ID_EPOCH_MS
    return timestamp_ms, worker_id, counter


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class WorkerIdLease:
    """A worker id leased from the WorkerLease table in the main database."""

    def __init__(self):
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"
        self.worker_id: int | None = None
        self.renewed_at = 0.0
        self.start_ms = 0

    def acquire(self) -> int:
        from messaging.models import WorkerLease

        WorkerLease.objects.bulk_create(
            [WorkerLease(worker_id=worker_id) for worker_id in range(MAX_WORKER_ID + 1)],
            ignore_conflicts=True,
        )
        now = timezone.now()
        free = Q(expires_at__isnull=True) | Q(expires_at__lt=now)
        candidates = list(WorkerLease.objects.filter(free).values_list("worker_id", flat=True)[:64])
        random.shuffle(candidates)
        for worker_id in candidates:
            # The conditional update is the claim: of two processes that
            # picked the same free id, only one matches the filter.
            claimed = WorkerLease.objects.filter(free, worker_id=worker_id).update(
                owner=self.owner, expires_at=now + timedelta(seconds=LEASE_SECONDS)
            )
            if claimed:
                self.worker_id = worker_id
                self.renewed_at = time.monotonic()
                self.start_ms = WorkerLease.objects.get(worker_id=worker_id).last_ms
                logger.info("Leased message-id worker id %d as %s", worker_id, self.owner)
                return worker_id
        raise ImproperlyConfigured(
            "No free message-id worker id is left in the main database; set CHAT_WORKER_ID "
            "for each process or wait for stale leases to expire."
        )

    def renew_if_due(self, last_ms: int) -> bool:
        """Extend the lease when it is due; return False when it was lost."""
        from messaging.models import WorkerLease

        if time.monotonic() - self.renewed_at < RENEW_AFTER_SECONDS:
            return True
        renewed = WorkerLease.objects.filter(worker_id=self.worker_id, owner=self.owner).update(
            expires_at=timezone.now() + timedelta(seconds=LEASE_SECONDS), last_ms=last_ms
        )
        if renewed:
            self.renewed_at = time.monotonic()
            return True
        logger.warning("Lost the lease on message-id worker id %d; leasing another", self.worker_id)
        return False

    def release(self, last_ms: int) -> None:
        from messaging.models import WorkerLease

        if self.worker_id is None:
            return
        try:
            WorkerLease.objects.filter(worker_id=self.worker_id, owner=self.owner).update(
                owner="", expires_at=None, last_ms=last_ms
            )
        except Exception:  # noqa: BLE001
            # Best effort: at interpreter exit the database or even the
            # logging streams may be gone, and the lease expires by itself.
            pass


class IdGenerator:
    """Issue ids for one process; thread-safe."""

    def __init__(self, worker_id: int | None = None, clock=_wall_clock_ms):
        self._lock = threading.Lock()
        self._clock = clock
        self._lease: WorkerIdLease | None = None
        self._worker_id = worker_id
        self._last_ms = 0
        self._counter = 0

    @property
    def worker_id(self) -> int | None:
        return self._worker_id

    def _ensure_worker_id(self) -> None:
        if self._lease is None and self._worker_id is not None:
            return
        if self._lease is None:
            self._lease = WorkerIdLease()
            atexit.register(lambda: self._lease.release(self._last_ms))
        if self._lease.worker_id is None or not self._lease.renew_if_due(self._last_ms):
            self._worker_id = self._lease.acquire()
            # Start in a millisecond after anything the previous holder of
            # this worker id (this process included) could have issued in.
            self._last_ms = max(self._last_ms, self._lease.start_ms) + 1
            self._counter = -1

    def next_id(self) -> int:
        with self._lock:
            self._ensure_worker_id()
            now_ms = self._clock()
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._counter = 0
            else:
                # Same millisecond, or the clock stepped back: keep counting
                # from the last timestamp issued, borrowing the next
                # millisecond when the counter runs out.
                self._counter += 1
                if self._counter > MAX_COUNTER:
                    self._last_ms += 1
                    self._counter = 0
            return compose_id(self._last_ms, self._worker_id, self._counter)


_generator: IdGenerator | None = None
_generator_lock = threading.Lock()


def get_generator() -> IdGenerator:
    global _generator
    with _generator_lock:
        if _generator is None:
            _generator = IdGenerator(worker_id=settings.CHAT_WORKER_ID)
        return _generator


def next_message_id() -> int:
    return get_generator().next_id()
