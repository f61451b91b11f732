"""Token providers. Each module registers itself; ``load_all`` is the registration list."""

from __future__ import annotations

import importlib

# Adding a provider: one module here, one test file, one example, and its name below.
PROVIDER_MODULES = ("biotz", "microshare", "podero", "basiq", "oauth2")


def load_all() -> None:
    for module in PROVIDER_MODULES:
        importlib.import_module(f"tokensync.providers.{module}")
