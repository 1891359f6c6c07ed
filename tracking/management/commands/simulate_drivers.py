"""``manage.py simulate_drivers``: drive the demo's drivers through the real
driver API over HTTP (see tracking.simulation)."""

from __future__ import annotations

import signal
import threading
import time

from django.core.management.base import BaseCommand, CommandError

from dispatch.models import Driver
from shipments.models import Hub
from tracking.simulation import DriverSimulation, SimulationStats


class Command(BaseCommand):
    help = "Simulate the drivers of today's published routes against a running server."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--password", required=True, help="The demo drivers' password.")
        parser.add_argument("--speedup", type=float, default=30.0, help="Simulated seconds per real second.")
        parser.add_argument("--duration", type=float, default=7200.0, help="Stop after this many seconds.")
        parser.add_argument("--drivers", default="", help="Comma-separated usernames (default: all active).")
        parser.add_argument("--max-drivers", type=int, default=30)
        parser.add_argument("--failure-rate", type=float, default=0.08)
        parser.add_argument(
            "--stall-seconds",
            type=float,
            default=120.0,
            help="Hold one first-mile driver at the hub this long (0: no delay).",
        )
        parser.add_argument("--seed", type=int, default=1)

    def handle(self, *args, **options):
        if not 0 < options["duration"] <= 24 * 3600:
            raise CommandError("--duration must be between 0 and 86400 seconds.")
        usernames = [u for u in options["drivers"].split(",") if u]
        drivers = Driver.objects.filter(is_active=True).select_related("user").order_by("user__username")
        if usernames:
            drivers = drivers.filter(user__username__in=usernames)
        drivers = list(drivers[: options["max_drivers"]])
        if not drivers:
            raise CommandError("No drivers to simulate.")
        hub_points = {
            hub.code: (hub.location.latitude, hub.location.longitude)
            for hub in Hub.objects.select_related("location")
        }
        stall_for = self._first_mile_driver(drivers) if options["stall_seconds"] > 0 else None
        deadline = time.monotonic() + options["duration"]
        stats = SimulationStats()
        stop_event = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop_event.set())
        signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
        threads = []
        for index, driver in enumerate(drivers):
            simulation = DriverSimulation(
                base_url=options["base_url"],
                username=driver.user.username,
                password=options["password"],
                hub_points=hub_points,
                speedup=options["speedup"],
                deadline=deadline,
                stats=stats,
                failure_rate=options["failure_rate"],
                stall_seconds=options["stall_seconds"] if driver.pk == stall_for else 0.0,
                seed=options["seed"],
                stop_event=stop_event,
            )
            thread = threading.Thread(target=simulation.run, name=driver.user.username, daemon=True)
            threads.append(thread)
            thread.start()
            time.sleep(0.2 + 0.05 * index)  # stagger the sign-ins
        self.stdout.write(f"Simulating {len(threads)} drivers at {options['speedup']}x …")
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + 5)
        stop_event.set()
        self.stdout.write(
            f"Done: {stats.drivers} drivers on routes, {stats.pings} pings, "
            f"{stats.events_applied} events applied, {stats.events_rejected} rejected, "
            f"{stats.failures} failed deliveries."
        )
        for error in stats.errors[:10]:
            self.stderr.write(error)

    @staticmethod
    def _first_mile_driver(drivers) -> int | None:
        from django.utils import timezone

        from routing.models import Route

        route = (
            Route.objects.filter(
                driver__in=drivers,
                mile="first",
                service_date=timezone.localdate(),
                status__in=["published", "in_progress"],
            )
            .order_by("id")
            .first()
        )
        return route.driver_id if route else None
