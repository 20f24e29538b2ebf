"""Print the bucket map and what each message shard holds."""

import json
from collections import defaultdict

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError

from messaging.models import Message, RoomSequence, ShardBucket
from messaging.sharding import FENCE_CLOSED, bucket_for_room, default_alias_for_bucket, pin_defaults


def ranges(numbers) -> str:
    """Format sorted integers as runs: "0-3, 7, 10-20 step 2".

    Buckets on their default shard form runs with a step of the shard
    count, which this keeps to a few runs instead of hundreds of numbers.
    """
    numbers = sorted(numbers)
    parts = []
    index = 0
    while index < len(numbers):
        start = numbers[index]
        end_index = index
        if index + 2 < len(numbers):
            step = numbers[index + 1] - start
            while end_index + 1 < len(numbers) and numbers[end_index + 1] - numbers[end_index] == step:
                end_index += 1
        if end_index - index >= 2 or (end_index == index + 1 and numbers[end_index] == start + 1):
            end = numbers[end_index]
            step = numbers[index + 1] - start
            parts.append(f"{start}-{end}" if step == 1 else f"{start}-{end} step {step}")
            index = end_index + 1
        else:
            parts.append(str(start))
            index += 1
    return ", ".join(parts) or "none"


def current_map() -> dict[int, tuple[str, bool]]:
    """Return {bucket: (alias, frozen)} for every bucket, defaults included."""
    rows = {row.bucket: (row.alias, row.frozen) for row in ShardBucket.objects.all()}
    return {
        bucket: rows.get(bucket, (default_alias_for_bucket(bucket), False))
        for bucket in range(settings.MESSAGE_BUCKETS)
    }


def shard_contents(alias: str, bucket_aliases: dict[int, tuple[str, bool]]) -> dict:
    """Count one shard's rows; rooms whose bucket lives elsewhere count as orphans."""
    rooms = list(RoomSequence.objects.using(alias).filter(room_id__gt=0).values_list("room_id", flat=True))
    orphan_rooms = [room_id for room_id in rooms if bucket_aliases[bucket_for_room(room_id)][0] != alias]
    closed_fences = sorted(
        -room_id - 1
        for room_id in RoomSequence.objects.using(alias)
        .filter(room_id__lt=0, last_seq=FENCE_CLOSED)
        .values_list("room_id", flat=True)
    )
    return {
        "messages": Message.objects.using(alias).count(),
        "rooms": len(rooms),
        "orphan_rooms": len(orphan_rooms),
        "orphan_messages": Message.objects.using(alias).filter(room_id__in=orphan_rooms).count() if orphan_rooms else 0,
        "closed_fences": closed_fences,
    }


class Command(BaseCommand):
    help = "Print which buckets each message shard owns, the frozen buckets and the rows on each shard."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
        parser.add_argument(
            "--pin",
            action="store_true",
            help="First write a map row for every bucket still on its default shard; run before adding a shard.",
        )

    def handle(self, *args, **options):
        if options["pin"]:
            written = pin_defaults()
            if not options["json"]:
                self.stdout.write(f"Pinned {written} bucket(s) to their current shard.")
        bucket_aliases = current_map()
        owned = defaultdict(list)
        for bucket, (alias, _) in bucket_aliases.items():
            owned[alias].append(bucket)
        explicit = {row.bucket: row.alias for row in ShardBucket.objects.all()}
        moved = sorted(bucket for bucket, alias in explicit.items() if alias != default_alias_for_bucket(bucket))
        frozen = sorted(bucket for bucket, (_, is_frozen) in bucket_aliases.items() if is_frozen)

        shards = {}
        for alias in settings.MESSAGE_SHARDS:
            try:
                contents = shard_contents(alias, bucket_aliases)
            except DatabaseError as error:
                contents = {"error": str(error)}
            shards[alias] = {"buckets": len(owned[alias]), "bucket_ranges": ranges(owned[alias]), **contents}

        report = {
            "buckets": settings.MESSAGE_BUCKETS,
            "shards": shards,
            "moved": {str(bucket): explicit[bucket] for bucket in moved},
            "frozen": frozen,
        }
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
            return
        self._print_text(report)

    def _print_text(self, report: dict) -> None:
        shard_count = len(report["shards"])
        self.stdout.write(
            f"{report['buckets']} buckets on {shard_count} shards; a bucket without a map row "
            f"lives on shard_<bucket % {shard_count}>."
        )
        for alias, shard in report["shards"].items():
            self.stdout.write("")
            self.stdout.write(f"{alias}: {shard['buckets']} buckets")
            self.stdout.write(f"  buckets: {shard['bucket_ranges']}")
            if "error" in shard:
                self.stdout.write(f"  unreachable: {shard['error']}")
                continue
            self.stdout.write(f"  rows: {shard['messages']} messages in {shard['rooms']} rooms")
            if shard["orphan_rooms"]:
                self.stdout.write(
                    f"  orphans: {shard['orphan_messages']} messages in {shard['orphan_rooms']} rooms whose "
                    f"bucket lives on another shard (left by an interrupted move)"
                )
            if shard["closed_fences"]:
                self.stdout.write(f"  writes refused for buckets: {ranges(shard['closed_fences'])}")
        self.stdout.write("")
        moved = report["moved"]
        self.stdout.write(
            "moved buckets: " + (", ".join(f"{bucket} -> {alias}" for bucket, alias in moved.items()) or "none")
        )
        self.stdout.write("frozen buckets: " + (ranges(report["frozen"]) if report["frozen"] else "none"))
