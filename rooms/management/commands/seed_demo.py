from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from messaging.actions import send_message
from rooms.actions import add_member, create_room, join_room
from rooms.models import Membership, Room

DEMO_PASSWORD = "demo-password"
DEMO_USERS = [("alice", "Alice Liddell"), ("bob", "Bob Marley"), ("carol", "Carol Danvers")]
PRIVATE_ROOM = "alice-and-bob"


class Command(BaseCommand):
    help = (
        "Create demo users alice, bob and carol with a public room \"general\" and a private room; "
        "runs only with DEBUG on. Running it again resets their passwords and changes nothing else."
    )

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("seed_demo creates accounts with a known password; it runs only with DEBUG on.")
        User = get_user_model()
        users = {}
        with transaction.atomic():
            for username, display_name in DEMO_USERS:
                user, _ = User.objects.get_or_create(username=username, defaults={"display_name": display_name})
                user.set_password(DEMO_PASSWORD)
                user.is_active = True
                user.save()
                users[username] = user

        alice = users["alice"]
        general = Room.objects.filter(name_key="general").first()
        first_seed = general is None
        if general is None:
            general = create_room(alice, "general", Room.Kind.PUBLIC, "Everyone, everything")
        for username in ("bob", "carol"):
            join_room(users[username], general.pk)

        private = Room.objects.filter(name_key=PRIVATE_ROOM).first()
        if private is None:
            private = create_room(alice, PRIVATE_ROOM, Room.Kind.PRIVATE, "Only alice and bob")
        if not Membership.objects.filter(room=private, user=users["bob"]).exists():
            add_member(alice, private.pk, "bob")

        if first_seed:
            send_message(alice, general.pk, "Welcome to general! 👋", "seed-general-1")
            send_message(users["bob"], general.pk, "Hi Alice, hi Carol.", "seed-general-2")
            send_message(alice, private.pk, "This room is just for the two of us.", "seed-private-1")

        self.stdout.write(self.style.SUCCESS("Demo data is ready."))
        self.stdout.write(f"Users: alice, bob, carol. Password for each: {DEMO_PASSWORD}")
        self.stdout.write(f"Rooms: general (public), {PRIVATE_ROOM} (private: alice and bob)")
