"""STAC API access: open a catalog (Planetary Computer items come back with signed hrefs)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from viper_rs.core.errors import InputError, first_line

#: Microsoft Planetary Computer's STAC API (its assets need signed URLs).
PLANETARY_COMPUTER_STAC = "https://planetarycomputer.microsoft.com/api/stac/v1"


def is_planetary_computer(url: str) -> bool:
    """Whether ``url`` is the Planetary Computer (its assets need signed URLs)."""
    return urlsplit(url).hostname == urlsplit(PLANETARY_COMPUTER_STAC).hostname


def open_catalog(url: str = PLANETARY_COMPUTER_STAC, timeout: float = 30.0) -> Any:
    """A pystac-client ``Client`` for the STAC API at ``url``; Planetary Computer items come
    back with signed asset URLs. InputError when the API cannot be reached."""
    from pystac_client import Client

    modifier = None
    if is_planetary_computer(url):
        import planetary_computer

        modifier = planetary_computer.sign_inplace
    try:
        return Client.open(url, modifier=modifier, timeout=timeout)
    except Exception as exc:
        raise InputError(f"cannot reach the STAC API at {url} ({first_line(exc)})") from None
