"""Roles, checked in one place.

* dispatcher: member of the ``dispatcher`` group (or staff); full operational access.
* driver: member of the ``driver`` group with a driver profile; only their own work.
* admin: Django admin (superuser/staff).
* customer: no account; the tracking token alone (public tracking views).

``IsDispatcher`` is the project-wide default permission (config.settings), so a
view is closed to drivers and anonymous users unless it says otherwise.
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission

DISPATCHER_GROUP = "dispatcher"
DRIVER_GROUP = "driver"


def user_is_dispatcher(user) -> bool:
    if not user or not user.is_authenticated or not user.is_active:
        return False
    if user.is_staff:
        return True
    return _in_group(user, DISPATCHER_GROUP)


def user_is_driver(user) -> bool:
    if not user or not user.is_authenticated or not user.is_active:
        return False
    return _in_group(user, DRIVER_GROUP) and hasattr(user, "driver")


def _in_group(user, name: str) -> bool:
    cache = getattr(user, "_allmile_groups", None)
    if cache is None:
        # .all() uses a prefetch of user__groups when authentication made one
        cache = {group.name for group in user.groups.all()}
        user._allmile_groups = cache
    return name in cache


class IsDispatcher(BasePermission):
    message = "Dispatcher access is required."

    def has_permission(self, request, view) -> bool:
        return user_is_dispatcher(request.user)


class IsDriver(BasePermission):
    message = "Driver access is required."

    def has_permission(self, request, view) -> bool:
        return user_is_driver(request.user)


class IsDispatcherOrDriver(BasePermission):
    message = "Dispatcher or driver access is required."

    def has_permission(self, request, view) -> bool:
        return user_is_dispatcher(request.user) or user_is_driver(request.user)
