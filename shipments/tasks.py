from celery import shared_task


@shared_task(idempotent=True)  # deleting expired rows twice is harmless
def idempotency_purge_task() -> int:
    from .maintenance import idempotency_records_purge

    return idempotency_records_purge()
