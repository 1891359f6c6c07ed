"""Domain errors raised by services; mapped to HTTP in shipments.api_errors."""

from __future__ import annotations


class DomainError(Exception):
    """A service's refusal of a request that fitted the schema (a rule): 422."""

    code = "domain_error"
    status_code = 422

    def __init__(self, message: str, *, field: str | None = None, **details):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details


class NoReachableHub(DomainError):
    code = "no_reachable_hub"


class PlanningError(DomainError):
    code = "planning_error"


class Conflict(DomainError):
    code = "conflict"
    status_code = 409


class IdempotencyMismatch(DomainError):
    code = "idempotency_key_reused"
    status_code = 422
