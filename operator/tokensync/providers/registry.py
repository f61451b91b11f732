"""The providers tokensync speaks: one import and one line each, in the order users see.

Explicit imports, not module names in strings, so a reader (and the import checks) can
follow them. The CRD's provider blocks and the tests' provider lists come from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokensync.providers.base import Provider
from tokensync.providers.basiq import Basiq
from tokensync.providers.biotz import Biotz
from tokensync.providers.microshare import Microshare
from tokensync.providers.oauth2 import OAuth2
from tokensync.providers.podero import Podero


class Registry:
    """Providers by name. The operator gets one; a test may build its own."""

    def __init__(self, providers: Iterable[Provider]) -> None:
        self._providers: dict[str, Provider] = {}
        for provider in providers:
            if provider.name in self._providers:
                raise ValueError(f"provider {provider.name!r} is registered twice")
            self._providers[provider.name] = provider

    def get(self, name: str) -> Provider:
        try:
            return self._providers[name]
        except KeyError:
            raise KeyError(f"unknown provider {name!r}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._providers)

    def __iter__(self) -> Iterator[Provider]:
        return iter(self._providers.values())


PROVIDERS = Registry(
    (
        Biotz(),
        Microshare(),
        Podero(),
        Basiq(),
        OAuth2(),
    )
)
