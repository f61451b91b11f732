"""The fake providers the integration run shares, as one bundle."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fakes.base import FakeProvider
from fakes.basiq import FakeBasiq
from fakes.keycloak import FakeKeycloak
from fakes.microshare import FakeMicroshare
from fakes.oauth2_server import FakeOAuth2Server
from fakes.podero import FakePodero


@dataclass
class Fakes:
    oauth2: FakeOAuth2Server
    keycloak: FakeKeycloak
    microshare: FakeMicroshare
    podero: FakePodero
    basiq: FakeBasiq

    def all(self) -> tuple[FakeProvider, ...]:
        return (self.oauth2, self.keycloak, self.microshare, self.podero, self.basiq)

    def every_secret(self) -> Iterator[str]:
        for fake in self.all():
            yield from fake.every_secret()
