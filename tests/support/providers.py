"""The fake providers the integration run shares, as one bundle.

A fake is a ``FakeProvider`` subclass in tests/fakes/ naming the provider it plays; a new
provider's fake is found there and joins the bundle without a line here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import get_type_hints

import fakes
from fakes.base import FakeProvider
from fakes.basiq import FakeBasiq
from fakes.keycloak import FakeKeycloak
from fakes.microshare import FakeMicroshare
from fakes.oauth2_server import FakeOAuth2Server
from fakes.podero import FakePodero


def fake_classes() -> dict[str, type[FakeProvider]]:
    """Each provider's fake class, by provider name, from the modules in tests/fakes/."""
    for module in pkgutil.iter_modules(fakes.__path__):
        importlib.import_module(f"{fakes.__name__}.{module.name}")
    found: dict[str, type[FakeProvider]] = {}
    pending = [FakeProvider]
    while pending:
        for cls in pending.pop().__subclasses__():
            pending.append(cls)
            if "provider" in vars(cls) and cls.__module__.startswith(f"{fakes.__name__}."):
                if cls.provider in found:
                    raise ValueError(f"two fakes play {cls.provider}: {found[cls.provider]}, {cls}")
                found[cls.provider] = cls
    return found


@dataclass
class Fakes:
    oauth2: FakeOAuth2Server
    keycloak: FakeKeycloak
    microshare: FakeMicroshare
    podero: FakePodero
    basiq: FakeBasiq
    # The fakes of providers without a field above, made here.
    others: dict[str, FakeProvider] = field(default_factory=dict)

    def __post_init__(self) -> None:
        named = {fake.provider for fake in self._named()}
        for provider, cls in fake_classes().items():
            if provider not in named and provider not in self.others:
                self.others[provider] = cls()

    @classmethod
    def create(cls) -> Fakes:
        """One fake per provider, not started yet: enter each of ``all()``."""
        hints = get_type_hints(cls)
        return cls(**{f.name: hints[f.name]() for f in fields(cls) if f.name != "others"})

    def _named(self) -> tuple[FakeProvider, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "others")

    def all(self) -> tuple[FakeProvider, ...]:
        return (*self._named(), *self.others.values())

    def operator_args(self, health_port: int) -> list[str]:
        """`tokensync run` flags for an operator the test starts itself: the fakes'
        hosts allowed over plain HTTP, no metrics port, health on ``health_port``."""
        hosts = ",".join(fake.host for fake in self.all())
        return [
            *("--allowed-hosts", hosts, "--allow-insecure-http"),
            *("--metrics-port", "0", "--health-port", str(health_port)),
        ]

    def for_provider(self, name: str) -> FakeProvider:
        for fake in self.all():
            if fake.provider == name:
                return fake
        raise LookupError(f"no fake plays provider {name!r}: add one to tests/fakes/")

    def every_secret(self) -> Iterator[str]:
        for fake in self.all():
            yield from fake.every_secret()
