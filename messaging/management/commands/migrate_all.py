from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Apply migrations to the main database and to every message shard."

    def handle(self, *args, **options):
        verbosity = options["verbosity"]
        for alias in ["default", *settings.MESSAGE_SHARDS]:
            if verbosity:
                self.stdout.write(f"Migrating {alias}")
            call_command("migrate", database=alias, interactive=False, verbosity=max(verbosity - 1, 0))
