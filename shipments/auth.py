"""Sign-in endpoints with a failure limit per username and client address."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from .ratelimit import client_ip, rate_limit_count, rate_limit_peek

LOGIN_FAILURES_PER_MINUTE = 10


def _failure_key(username: str, ip: str) -> str:
    return f"login-fail:{username.lower()[:150]}:{ip}"


def login_blocked(username: str, ip: str) -> bool:
    return (
        rate_limit_peek(key=_failure_key(username, ip), window_seconds=60)
        >= LOGIN_FAILURES_PER_MINUTE
    )


def login_failure_record(username: str, ip: str) -> None:
    rate_limit_count(key=_failure_key(username, ip), window_seconds=60)


TOO_MANY = "Too many failed sign-ins; try again in a minute."


class TokenLoginApi(ObtainAuthToken):
    """Exchange a username and password for an API token (10 failures/min per user and IP)."""

    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(
        responses={200: {"type": "object", "properties": {"token": {"type": "string"}}}}
    )
    def post(self, request, *args, **kwargs):
        username = (
            str(request.data.get("username", ""))
            if hasattr(request.data, "get")
            else ""
        )
        ip = client_ip(request)
        if login_blocked(username, ip):
            return Response(
                {"detail": TOO_MANY}, status=status.HTTP_429_TOO_MANY_REQUESTS
            )
        serializer = self.get_serializer(data=request.data)
        if not serializer.is_valid():
            login_failure_record(username, ip)
            return Response(serializer.errors, status=status.HTTP_400_BAD_REQUEST)
        return super().post(request, *args, **kwargs)


class DashboardLoginView(auth_views.LoginView):
    template_name = "registration/login.html"

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "")
        ip = client_ip(request)
        if login_blocked(username, ip):
            return HttpResponse(TOO_MANY, status=429, content_type="text/plain")
        response = super().post(request, *args, **kwargs)
        if not request.user.is_authenticated:
            login_failure_record(username, ip)
        return response
