from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from shipments.models import Hub


class Command(BaseCommand):
    help = "Seed a realistic demo network (Nice/Monaco region) with drivers, vehicles and shipments."

    def add_arguments(self, parser):
        parser.add_argument(
            "--seed", type=int, default=7, help="Random seed (same seed, same data)."
        )
        parser.add_argument(
            "--password", default="allmile-demo", help="Password of every demo login."
        )
        parser.add_argument("--shipments", type=int, default=300)
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="Do nothing if the database already holds a network (re-plans today's routes if none).",
        )

    def handle(self, *args, seed, password, shipments, if_empty, **options):
        from demo.seed import demo_dispatch, demo_seed

        if Hub.objects.exists():
            if not if_empty:
                raise CommandError(
                    "The database already holds a network; use a fresh database."
                )
            from routing.models import Route

            if not Route.objects.filter(service_date=timezone.localdate()).exists():
                summary = demo_dispatch(service_date=timezone.localdate())
                self.stdout.write(f"Already seeded; planned today's routes: {summary}")
            else:
                self.stdout.write("Already seeded; today's routes exist.")
            return
        self.stdout.write("Seeding the demo network and planning today's routes (a minute or two)…")
        summary = demo_seed(seed=seed, password=password, shipments=shipments)
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded {summary.hubs} hubs, {summary.producers} producers/suppliers, "
                f"{summary.customers} customers, {summary.vehicles} vehicles, "
                f"{summary.drivers} drivers, {summary.shipments} shipments."
            )
        )
        self.stdout.write(f"Today's dispatch: {summary.dispatch}")
        self.stdout.write(
            f"Logins: dispatcher, admin, driver1 … driver{summary.drivers}; password: {password}"
        )
        for url in summary.tracking_urls:
            self.stdout.write(f"Tracking link: {url}")
