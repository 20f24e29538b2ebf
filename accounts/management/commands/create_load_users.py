"""Create many users, signed-in sessions and rooms for the load generator.

Everything is written with bulk_create: one unusable password hash shared
by every user, session rows encoded by the configured session engine, and
memberships for a chosen mix of room sizes. 10,000 users with their
sessions take a few seconds on SQLite.

Session keys are an HMAC of the username under SECRET_KEY, so --reset can
find and delete the sessions it created without decoding every session in
the database, and a server started with the same SECRET_KEY accepts them.
"""

import json
import random
from datetime import timedelta
from importlib import import_module
from pathlib import Path

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.sessions.models import Session
from django.core.cache import caches
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from messaging.models import Message, RoomSequence
from messaging.socket_checks import DATABASE_SESSION_ENGINES
from rooms.models import Membership, Room

MAX_USERS = 1_000_000
SMALL_ROOM_MAX = 10


def parse_room_sizes(spec: str, user_count: int) -> list[int]:
    """Return one member count per room from a spec such as "2-10x300,50x20,1000".

    Each comma-separated item is SIZE, SIZExCOUNT or LOW-HIGHxCOUNT (sizes
    drawn uniformly). "mixed" stands for a chat-like mix scaled to the
    number of users: many rooms of 2-10, some of 50, a few of hundreds
    and one of up to 2,000. Sizes above the number of users are capped.
    """
    if spec == "mixed":
        spec = ",".join(
            item
            for item in (
                f"2-10x{max(1, user_count // 3)}",
                f"50x{user_count // 100}" if user_count >= 100 else "",
                f"500x{user_count // 2500}" if user_count >= 2500 else "",
                f"{min(user_count, 2000)}x1",
            )
            if item
        )
    rng = random.Random(f"room-sizes:{spec}:{user_count}")
    sizes = []
    for item in spec.split(","):
        item = item.strip()
        size_text, _, count_text = item.partition("x")
        try:
            count = int(count_text) if count_text else 1
            low_text, _, high_text = size_text.partition("-")
            low = int(low_text)
            high = int(high_text) if high_text else low
        except ValueError:
            raise CommandError(
                f"Invalid room size {item!r}; use SIZE, SIZExCOUNT or LOW-HIGHxCOUNT, for example 2-10x300."
            ) from None
        if count < 0 or low < 1 or high < low:
            raise CommandError(f"Invalid room size {item!r}; sizes must be at least 1 and LOW at most HIGH.")
        sizes.extend(min(user_count, rng.randint(low, high)) for _ in range(count))
    return sizes


class Command(BaseCommand):
    help = (
        "Create COUNT users named PREFIX-000000, ... with signed-in sessions and room memberships, "
        "and write a JSON file mapping each user to its session key and rooms for bench/loadgen.py."
    )

    def add_arguments(self, parser):
        parser.add_argument("count", type=int, help="Number of users to create.")
        parser.add_argument("--prefix", default="load", help="Username and room-name prefix (default: load).")
        parser.add_argument(
            "--room-sizes",
            default="mixed",
            help='Rooms to create: "mixed", or comma-separated SIZE, SIZExCOUNT or LOW-HIGHxCOUNT '
            '(for example "1000" or "2-10x300,50x20,500x2"). Default: mixed.',
        )
        parser.add_argument(
            "--output", required=True, help="Path of the JSON file for the load generator (overwritten)."
        )
        parser.add_argument("--seed", type=int, default=1, help="Random seed for room membership (default: 1).")
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Delete this prefix's users, sessions, rooms and messages first; other data is kept.",
        )

    def handle(self, *args, count, prefix, room_sizes, output, seed, reset, **options):
        if not 1 <= count <= MAX_USERS:
            raise CommandError(f"COUNT must be between 1 and {MAX_USERS}; got {count}.")
        if not prefix.isalnum():
            raise CommandError(f"--prefix must be letters and digits only; got {prefix!r}.")
        if settings.SESSION_ENGINE not in DATABASE_SESSION_ENGINES:
            raise CommandError(
                f"SESSION_ENGINE is {settings.SESSION_ENGINE}; create_load_users writes session rows and "
                f"supports only {', '.join(DATABASE_SESSION_ENGINES)}."
            )
        sizes = parse_room_sizes(room_sizes, count)

        User = get_user_model()
        existing = User.objects.filter(username__startswith=f"{prefix}-").count()
        if existing and not reset:
            raise CommandError(
                f"{existing} users with the prefix {prefix!r} exist already; pass --reset to replace them."
            )
        if existing:
            self._delete_prefix(prefix)

        users = self._create_users(prefix, count)
        session_keys = self._create_sessions(users)
        rooms = self._create_rooms(prefix, users, sizes, seed)

        index_by_id = {user.pk: index for index, user in enumerate(users)}
        rooms_by_user: dict[int, list[int]] = {user.pk: [] for user in users}
        for room_id, member_ids in rooms:
            for user_id in member_ids:
                rooms_by_user[user_id].append(room_id)
        document = {
            "prefix": prefix,
            "cookie_name": settings.SESSION_COOKIE_NAME,
            "users": [
                {
                    "id": user.pk,
                    "username": user.username,
                    "display_name": user.display_name,
                    "session_key": key,
                    "rooms": rooms_by_user[user.pk],
                }
                for user, key in zip(users, session_keys)
            ],
            "rooms": [
                {"id": room_id, "members": [index_by_id[user_id] for user_id in member_ids]}
                for room_id, member_ids in rooms
            ],
        }
        Path(output).write_text(json.dumps(document), encoding="utf-8")
        memberships = sum(len(member_ids) for _, member_ids in rooms)
        self.stdout.write(
            f"Created {count} users, {len(rooms)} rooms and {memberships} memberships; wrote {output}"
        )

    @staticmethod
    def _session_key(username: str) -> str:
        # 40 hex characters: valid session-key characters, unguessable
        # without SECRET_KEY, and the same on every run with the same key.
        return salted_hmac("accounts.create_load_users", username, algorithm="sha256").hexdigest()[:40]

    def _create_users(self, prefix: str, count: int) -> list:
        User = get_user_model()
        # Unusable password: these accounts sign in through their session
        # only. One hash for all of them also means one session auth hash.
        password = make_password(None)
        now = timezone.now()
        with transaction.atomic():
            User.objects.bulk_create(
                [
                    User(
                        username=f"{prefix}-{index:06d}",
                        display_name=f"Load user {index}",
                        password=password,
                        is_active=True,
                        date_joined=now,
                    )
                    for index in range(count)
                ],
                batch_size=2000,
            )
        # Re-read for the primary keys: not every backend returns them from a bulk insert.
        return list(User.objects.filter(username__startswith=f"{prefix}-").order_by("username"))

    def _create_sessions(self, users: list) -> list[str]:
        store = import_module(settings.SESSION_ENGINE).SessionStore()
        backend = settings.AUTHENTICATION_BACKENDS[0]
        auth_hash = users[0].get_session_auth_hash()
        expire = timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE)
        keys = [self._session_key(user.username) for user in users]
        rows = [
            Session(
                session_key=key,
                session_data=store.encode(
                    {SESSION_KEY: str(user.pk), BACKEND_SESSION_KEY: backend, HASH_SESSION_KEY: auth_hash}
                ),
                expire_date=expire,
            )
            for user, key in zip(users, keys)
        ]
        with transaction.atomic():
            Session.objects.bulk_create(rows, batch_size=2000)
        return keys

    def _create_rooms(self, prefix: str, users: list, sizes: list[int], seed: int) -> list[tuple[int, list[int]]]:
        rng = random.Random(seed)
        user_ids = [user.pk for user in users]
        plans = []
        for number, size in enumerate(sizes):
            members = rng.sample(user_ids, size)
            name = f"{prefix}-room-{number:06d}-{size}"
            kind = Room.Kind.PRIVATE if size <= SMALL_ROOM_MAX else Room.Kind.PUBLIC
            # bulk_create skips Room.save(), which is where name_key is set.
            plans.append((Room(name=name, name_key=name.casefold(), kind=kind, created_by_id=members[0]), members))
        with transaction.atomic():
            Room.objects.bulk_create([room for room, _ in plans], batch_size=2000)
            room_ids = dict(
                Room.objects.filter(name_key__startswith=f"{prefix}-room-").values_list("name_key", "id")
            )
            memberships = []
            result = []
            for room, members in plans:
                room_id = room_ids[room.name_key]
                result.append((room_id, members))
                memberships.extend(
                    Membership(
                        room_id=room_id,
                        user_id=user_id,
                        role=Membership.Role.OWNER if position == 0 else Membership.Role.MEMBER,
                    )
                    for position, user_id in enumerate(members)
                )
            Membership.objects.bulk_create(memberships, batch_size=5000)
        return result

    def _delete_prefix(self, prefix: str) -> None:
        User = get_user_model()
        usernames = list(User.objects.filter(username__startswith=f"{prefix}-").values_list("username", flat=True))
        keys = [self._session_key(username) for username in usernames]
        room_ids = list(Room.objects.filter(name_key__startswith=f"{prefix}-room-").values_list("id", flat=True))
        for alias in settings.MESSAGE_SHARDS:
            for start in range(0, len(room_ids), 500):
                chunk = room_ids[start : start + 500]
                Message.objects.using(alias).filter(room_id__in=chunk).delete()
                RoomSequence.objects.using(alias).filter(room_id__in=chunk).delete()
        with transaction.atomic():
            for start in range(0, len(keys), 500):
                Session.objects.filter(session_key__in=keys[start : start + 500]).delete()
            Room.objects.filter(id__in=room_ids).delete()
            User.objects.filter(username__startswith=f"{prefix}-").delete()
        store_class = import_module(settings.SESSION_ENGINE).SessionStore
        prefix_in_cache = getattr(store_class, "cache_key_prefix", None)
        if prefix_in_cache:
            caches[settings.SESSION_CACHE_ALIAS].delete_many([prefix_in_cache + key for key in keys])
        self.stdout.write(f"Deleted {len(usernames)} users and {len(room_ids)} rooms with the prefix {prefix!r}")
