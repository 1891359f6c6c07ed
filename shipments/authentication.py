"""Token authentication that loads what the role checks need in the same query."""

from rest_framework import authentication


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key):
        model = self.get_model()
        try:
            token = (
                model.objects.select_related("user", "user__driver")
                .prefetch_related("user__groups")
                .get(key=key)
            )
        except model.DoesNotExist:
            return super().authenticate_credentials(
                key
            )  # the standard "Invalid token." answer
        if not token.user.is_active:
            return super().authenticate_credentials(key)
        return (token.user, token)
