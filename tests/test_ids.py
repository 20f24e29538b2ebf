"""Message ids: the bit layout, ordering and uniqueness, and worker-id leases."""

import itertools
import threading
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from messaging import ids
from messaging.ids import (
    ID_EPOCH_MS,
    LEASE_SECONDS,
    MAX_COUNTER,
    MAX_WORKER_ID,
    IdGenerator,
    WorkerIdLease,
    compose_id,
    split_id,
)
from messaging.models import WorkerLease
from tests.conftest import run_django_setup

# 2026-01-01T00:00:00Z, a fixed clock reading for generators with an injected clock.
T0 = 1_767_225_600_000


def fixed_clock(value=T0):
    return lambda: value


def clock_from(readings):
    """Return a clock that yields `readings` in order, then repeats the last one."""
    iterator = iter(readings)
    last = [None]

    def clock():
        last[0] = next(iterator, last[0])
        return last[0]

    return clock


def hold_all_worker_ids_except(worker_id: int) -> None:
    """Make every worker id but one look leased by a live process."""
    WorkerLease.objects.bulk_create(
        [WorkerLease(worker_id=number) for number in range(MAX_WORKER_ID + 1)], ignore_conflicts=True
    )
    WorkerLease.objects.exclude(worker_id=worker_id).update(
        owner="other-host:1:00000000", expires_at=timezone.now() + timedelta(hours=1)
    )


@pytest.fixture
def renew_on_every_id(monkeypatch):
    """Check the lease on every id instead of once a minute."""
    monkeypatch.setattr(ids, "RENEW_AFTER_SECONDS", 0)


# Layout


def test_layout_round_trip():
    cases = [
        (ID_EPOCH_MS, 0, 0),
        (ID_EPOCH_MS + 1, 1, 1),
        (T0, 513, 2048),
        (ID_EPOCH_MS + (1 << 41) - 1, MAX_WORKER_ID, MAX_COUNTER),
    ]
    for timestamp_ms, worker_id, counter in cases:
        message_id = compose_id(timestamp_ms, worker_id, counter)
        assert split_id(message_id) == (timestamp_ms, worker_id, counter)
        assert 0 <= message_id < 2**63


def test_layout_bit_positions():
    assert compose_id(ID_EPOCH_MS, 0, 1) == 1
    assert compose_id(ID_EPOCH_MS, 1, 0) == 1 << 12
    assert compose_id(ID_EPOCH_MS + 1, 0, 0) == 1 << 22
    assert compose_id(ID_EPOCH_MS + (1 << 41) - 1, MAX_WORKER_ID, MAX_COUNTER) == 2**63 - 1
    assert (MAX_WORKER_ID, MAX_COUNTER) == (1023, 4095)


def test_layout_orders_by_time_first():
    earlier = compose_id(T0, MAX_WORKER_ID, MAX_COUNTER)
    later = compose_id(T0 + 1, 0, 0)
    assert earlier < later


# One generator


def test_generator_monotonic_and_unique():
    generator = IdGenerator(worker_id=7)
    issued = [generator.next_id() for _ in range(100_000)]

    assert all(first < second for first, second in itertools.pairwise(issued))
    assert len(set(issued)) == 100_000
    assert {split_id(message_id)[1] for message_id in issued} == {7}


def test_generator_uses_clock_time():
    generator = IdGenerator(worker_id=3, clock=clock_from([T0, T0, T0 + 9]))

    assert [split_id(generator.next_id()) for _ in range(3)] == [(T0, 3, 0), (T0, 3, 1), (T0 + 9, 3, 0)]


def test_generator_thread_safe():
    generator = IdGenerator(worker_id=11)
    batches = [[] for _ in range(8)]
    start = threading.Barrier(len(batches))

    def issue(batch):
        start.wait()
        for _ in range(5_000):
            batch.append(generator.next_id())

    threads = [threading.Thread(target=issue, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    issued = [message_id for batch in batches for message_id in batch]
    assert len(issued) == 40_000
    assert len(set(issued)) == 40_000
    for batch in batches:
        assert batch == sorted(batch)


def test_two_workers_never_collide():
    # The same millisecond on both: only the worker bits tell the ids apart.
    first = IdGenerator(worker_id=1, clock=fixed_clock())
    second = IdGenerator(worker_id=2, clock=fixed_clock())

    first_ids = {first.next_id() for _ in range(10_000)}
    second_ids = {second.next_id() for _ in range(10_000)}

    assert len(first_ids) == len(second_ids) == 10_000
    assert first_ids.isdisjoint(second_ids)


def test_clock_step_back_keeps_increasing():
    generator = IdGenerator(worker_id=4, clock=clock_from([T0, T0 + 5, T0 + 2, T0 + 2, T0 + 1, T0 + 6]))
    issued = [generator.next_id() for _ in range(6)]

    assert all(first < second for first, second in itertools.pairwise(issued))
    assert [split_id(message_id) for message_id in issued] == [
        (T0, 4, 0),
        (T0 + 5, 4, 0),
        (T0 + 5, 4, 1),
        (T0 + 5, 4, 2),
        (T0 + 5, 4, 3),
        (T0 + 6, 4, 0),
    ]


def test_counter_overflow_borrows_next_ms():
    readings = [T0] * (MAX_COUNTER + 3) + [T0 + 1, T0 + 2]
    generator = IdGenerator(worker_id=9, clock=clock_from(readings))
    issued = [generator.next_id() for _ in range(len(readings))]

    parts = [split_id(message_id) for message_id in issued]
    assert parts[0] == (T0, 9, 0)
    assert parts[MAX_COUNTER] == (T0, 9, MAX_COUNTER)
    assert parts[MAX_COUNTER + 1] == (T0 + 1, 9, 0)
    assert parts[MAX_COUNTER + 2] == (T0 + 1, 9, 1)
    # The clock reaches the borrowed millisecond: the counter continues there.
    assert parts[MAX_COUNTER + 3] == (T0 + 1, 9, 2)
    assert parts[MAX_COUNTER + 4] == (T0 + 2, 9, 0)
    assert len(set(issued)) == len(issued)
    assert issued == sorted(issued)


# Worker-id leases


@pytest.mark.django_db
def test_two_leases_get_different_ids():
    first = WorkerIdLease()
    second = WorkerIdLease()

    first_id = first.acquire()
    second_id = second.acquire()

    assert first_id != second_id
    assert 0 <= first_id <= MAX_WORKER_ID
    assert 0 <= second_id <= MAX_WORKER_ID
    assert first.owner != second.owner
    assert WorkerLease.objects.get(worker_id=first_id).owner == first.owner
    assert WorkerLease.objects.get(worker_id=second_id).owner == second.owner
    assert WorkerLease.objects.count() == MAX_WORKER_ID + 1


@pytest.mark.django_db
def test_lease_row_expiry():
    lease = WorkerIdLease()
    before = timezone.now()
    worker_id = lease.acquire()
    after = timezone.now()

    row = WorkerLease.objects.get(worker_id=worker_id)
    assert before + timedelta(seconds=LEASE_SECONDS) <= row.expires_at <= after + timedelta(seconds=LEASE_SECONDS)


@pytest.mark.django_db
def test_lease_held_by_other_not_taken():
    hold_all_worker_ids_except(17)
    assert WorkerIdLease().acquire() == 17

    with pytest.raises(ImproperlyConfigured) as raised:
        WorkerIdLease().acquire()
    assert "No free message-id worker id" in str(raised.value)
    assert "CHAT_WORKER_ID" in str(raised.value)


@pytest.mark.django_db
def test_expired_lease_taken_over():
    hold_all_worker_ids_except(21)
    WorkerLease.objects.filter(worker_id=21).update(
        owner="crashed-host:9:deadbeef", expires_at=timezone.now() - timedelta(seconds=1)
    )

    lease = WorkerIdLease()
    assert lease.acquire() == 21
    assert WorkerLease.objects.get(worker_id=21).owner == lease.owner


@pytest.mark.django_db
def test_lost_lease_re_leased(renew_on_every_id):
    generator = IdGenerator(clock=clock_from([T0, T0 + 1, T0 + 2]))
    first = generator.next_id()
    lost_worker_id = generator.worker_id
    assert split_id(first)[1] == lost_worker_id

    # The lease expired while the process was idle and another process took it.
    WorkerLease.objects.filter(worker_id=lost_worker_id).update(
        owner="other-host:2:00000000", expires_at=timezone.now() + timedelta(seconds=LEASE_SECONDS)
    )
    second = generator.next_id()

    assert generator.worker_id != lost_worker_id
    assert split_id(second) == (T0 + 1, generator.worker_id, 0)
    assert second > first
    assert WorkerLease.objects.get(worker_id=lost_worker_id).owner == "other-host:2:00000000"
    assert WorkerLease.objects.get(worker_id=generator.worker_id).owner not in ("", "other-host:2:00000000")


@pytest.mark.django_db
def test_lease_renewal_stores_last_ms(renew_on_every_id):
    generator = IdGenerator(clock=clock_from([T0, T0 + 40]))
    generator.next_id()
    generator.next_id()
    generator.next_id()

    # Renewal runs before each id, so it stores the timestamp of the id before.
    assert WorkerLease.objects.get(worker_id=generator.worker_id).last_ms == T0 + 40


@pytest.mark.django_db
def test_re_lease_same_id_no_duplicate(renew_on_every_id):
    hold_all_worker_ids_except(5)
    generator = IdGenerator(clock=fixed_clock())
    issued = [generator.next_id() for _ in range(3)]
    assert generator.worker_id == 5

    # Another process took worker id 5 and released it again. It is the only
    # free id, so this generator leases it a second time.
    WorkerLease.objects.filter(worker_id=5).update(owner="", expires_at=None, last_ms=T0 - 100)
    issued.append(generator.next_id())

    assert generator.worker_id == 5
    assert len(set(issued)) == 4, [split_id(message_id) for message_id in issued]
    assert issued == sorted(issued)


@pytest.mark.django_db
def test_release_frees_worker_id():
    hold_all_worker_ids_except(33)
    lease = WorkerIdLease()
    assert lease.acquire() == 33

    lease.release(last_ms=T0 + 77)

    row = WorkerLease.objects.get(worker_id=33)
    assert (row.owner, row.expires_at, row.last_ms) == ("", None, T0 + 77)
    successor = WorkerIdLease()
    assert successor.acquire() == 33
    assert successor.start_ms == T0 + 77


@pytest.mark.django_db
def test_release_by_former_holder_ignored():
    hold_all_worker_ids_except(34)
    former = WorkerIdLease()
    former.acquire()
    WorkerLease.objects.filter(worker_id=34).update(owner="new-holder:1:00000000", last_ms=T0)

    former.release(last_ms=T0 - 5)

    row = WorkerLease.objects.get(worker_id=34)
    assert (row.owner, row.last_ms) == ("new-holder:1:00000000", T0)
    assert row.expires_at is not None


@pytest.mark.django_db
def test_lease_start_ms_blocks_lower_timestamps():
    hold_all_worker_ids_except(40)
    # The last holder issued ids up to T0 + 60 s, and this process's clock is behind.
    WorkerLease.objects.filter(worker_id=40).update(last_ms=T0 + 60_000)
    generator = IdGenerator(clock=clock_from([T0, T0 + 1, T0 + 70_000]))

    parts = [split_id(generator.next_id()) for _ in range(3)]

    assert [worker_id for _, worker_id, _ in parts] == [40, 40, 40]
    assert all(timestamp_ms >= T0 + 60_000 for timestamp_ms, _, _ in parts)
    assert parts[2] == (T0 + 70_000, 40, 0)


@pytest.mark.django_db
def test_lease_start_above_last_holder_ms():
    hold_all_worker_ids_except(41)
    # The last holder may have used every counter value in its last
    # millisecond, so a new holder must start in a later one.
    last_holder_ids = {compose_id(T0, 41, counter) for counter in range(MAX_COUNTER + 1)}
    WorkerLease.objects.filter(worker_id=41).update(last_ms=T0)
    generator = IdGenerator(clock=fixed_clock(T0))

    issued = [generator.next_id() for _ in range(3)]

    assert generator.worker_id == 41
    assert last_holder_ids.isdisjoint(issued), [split_id(message_id) for message_id in issued]


def test_fixed_worker_id_needs_no_database():
    # With CHAT_WORKER_ID set the generator never touches the lease table.
    # This test has no database access, so a query would fail it.
    generator = IdGenerator(worker_id=MAX_WORKER_ID, clock=fixed_clock())
    assert split_id(generator.next_id()) == (T0, MAX_WORKER_ID, 0)
    assert generator.worker_id == MAX_WORKER_ID


def test_chat_worker_id_bounds(tmp_path):
    show = "from django.conf import settings\nprint(settings.CHAT_WORKER_ID)\n"
    cases = {
        "0": (0, "0"),
        "1023": (0, "1023"),
        "": (0, "None"),
        "1024": (1, "CHAT_WORKER_ID=1024 is above the maximum of 1023."),
        "-1": (1, "CHAT_WORKER_ID=-1 is below the minimum of 0."),
        "seven": (1, "CHAT_WORKER_ID='seven' is not an integer."),
    }
    processes = {
        value: run_django_setup({"CHAT_DATA_DIR": str(tmp_path / "data"), "CHAT_WORKER_ID": value}, show)
        for value in cases
    }

    for value, (exit_code, expected) in cases.items():
        stdout, stderr = processes[value].communicate(timeout=60)
        assert processes[value].returncode == exit_code, (value, stderr[-2000:])
        if exit_code == 0:
            assert stdout.strip() == expected, value
        else:
            assert "ImproperlyConfigured" in stderr, value
            assert expected in stderr, (value, stderr[-2000:])
