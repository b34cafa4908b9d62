"""Placeholder replaced below."""

from dealer.api.framework import Api


def register(api: Api) -> None:
    return None
