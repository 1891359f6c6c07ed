from celery import shared_task


@shared_task
def idempotency_purge_task() -> int:
    from .maintenance import idempotency_records_purge

    return idempotency_records_purge()
