"""Tables the harness reads back to count what happened (never used by the product)."""

from django.db import models


class ProbeRun(models.Model):
    """One run of the probe task: proves a worker consumes the queue again."""

    token = models.CharField(max_length=64, db_index=True)
    ran_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"probe {self.token}"


class InboxMessage(models.Model):
    """A relayed live message as a consumer applied it: the unique message id
    turns a duplicate publish into a refused duplicate application."""

    message_id = models.CharField(max_length=64, unique=True)
    seq = models.BigIntegerField(null=True)
    received_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.message_id
