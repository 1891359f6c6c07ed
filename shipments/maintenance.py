from django.conf import settings
from django.utils import timezone

from .models import IdempotencyRecord


def idempotency_records_purge() -> int:
    """Drop stored answers older than the key lifetime (at least 24 h)."""
    cutoff = timezone.now() - settings.IDEMPOTENCY_KEY_TTL
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
