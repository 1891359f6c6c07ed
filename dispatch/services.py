"""Fleet services: drivers and their accounts."""

from __future__ import annotations

from datetime import time

from django.contrib.auth.models import Group, User
from django.db import transaction
from rest_framework.authtoken.models import Token

from shipments.errors import Conflict, DomainError
from shipments.models import Hub
from shipments.roles import DRIVER_GROUP

from .models import Driver, Vehicle


@transaction.atomic
def driver_create(
    *,
    username: str,
    password: str | None,
    home_hub: Hub,
    shift_start: time,
    shift_end: time,
    first_name: str = "",
    last_name: str = "",
    email: str = "",
    phone: str = "",
    default_vehicle: Vehicle | None = None,
) -> Driver:
    """A driver with a user account in the driver group and an API token."""
    if User.objects.filter(username=username).exists():
        raise Conflict("This username is taken.", field="username")
    if shift_end <= shift_start:
        raise DomainError("The shift must end after it starts.", field="shift_end")
    user = User(username=username, first_name=first_name, last_name=last_name, email=email)
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.save()
    user.groups.add(Group.objects.get_or_create(name=DRIVER_GROUP)[0])
    Token.objects.create(user=user)
    return Driver.objects.create(
        user=user,
        phone=phone,
        home_hub=home_hub,
        default_vehicle=default_vehicle,
        shift_start=shift_start,
        shift_end=shift_end,
    )
