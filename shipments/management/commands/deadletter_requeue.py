"""Re-queue dead-lettered tasks (see shipments.taskguard)."""

from django.core.management.base import BaseCommand, CommandError

from shipments.models import DeadLetter
from shipments.taskguard import dead_letter_requeue


class Command(BaseCommand):
    help = (
        "Send dead-lettered tasks again with a fresh delivery count (by id, or --all)."
    )

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=int, help="dead letter ids")
        parser.add_argument(
            "--all",
            dest="everything",
            action="store_true",
            help="every dead letter not re-queued yet",
        )
        parser.add_argument(
            "--list",
            dest="listing",
            action="store_true",
            help="list them, send nothing",
        )

    def handle(self, *args, ids, everything, listing, **options):
        if listing:
            for letter in DeadLetter.objects.all():
                requeued = (
                    f"re-queued {letter.requeue_count}×" if letter.requeued_at else ""
                )
                self.stdout.write(
                    f"{letter.pk}\t{letter.task_name}\t{letter.task_id}\t"
                    f"{letter.deliveries} deliveries\t{letter.last_seen_at:%Y-%m-%d %H:%M:%S}"
                    f"\t{requeued}"
                )
            return
        if everything:
            ids = list(
                DeadLetter.objects.filter(requeued_at__isnull=True).values_list(
                    "pk", flat=True
                )
            )
        elif not ids:
            raise CommandError("Name dead letters by id, or pass --all.")
        known = set(DeadLetter.objects.filter(pk__in=ids).values_list("pk", flat=True))
        if missing := sorted(set(ids) - known):
            raise CommandError(f"No dead letter with id {missing}.")
        for dead_letter_id in ids:
            letter = dead_letter_requeue(dead_letter_id=dead_letter_id)
            self.stdout.write(f"re-queued {letter.task_name}[{letter.task_id}]")
