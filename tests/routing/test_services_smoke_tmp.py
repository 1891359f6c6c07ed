import pytest
from routing.services import optimization_job_create, optimization_job_run
from routing.models import Route
from tests.routing.test_jobs_support import last_mile_day

pytestmark = pytest.mark.django_db

def test_smoke(hubs):
    d = last_mile_day(hubs, count=8)
    job = optimization_job_create(service_date=d.day, hub=d.hub, mile="last", vehicles=d.vehicles, time_limit_seconds=1)
    job = optimization_job_run(job_id=job.pk)
    print(job.status, job.error, job.statistics)
    for r in Route.objects.filter(job=job):
        print(r, r.vehicle, r.distance_meters, r.cost, [(s.sequence, s.kind, s.planned_arrival, list(s.legs.values_list("pk", flat=True))) for s in r.stops.all()])
    assert job.status == "succeeded"
