"""Celery entry points of the dispatch app, found by the worker's autodiscovery
(which imports ``<app>.tasks``). The tasks live beside their service."""

from .pod_tasks import pod_thumbnail_make_task

__all__ = ["pod_thumbnail_make_task"]
