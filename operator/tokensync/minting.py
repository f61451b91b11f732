"""One mint at a provider, as the reconciler asks for it: the proofs obtained just before
the call, a shared token handed out where the provider allows it, and every attempt
measured (metrics) and logged once per failure."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from tokensync import metrics, status
from tokensync.clock import Clock
from tokensync.decision import Cause
from tokensync.digest import DigestKey
from tokensync.endpoints import HttpClient
from tokensync.mint_inputs import MintInputs
from tokensync.model import ProviderTokenView
from tokensync.providers.base import MintError, Provider, Token
from tokensync.sharing import SharedMints, share_key

logger = logging.getLogger("tokensync.reconcile")


@dataclass(frozen=True)
class Minted:
    token: Token
    duration: float  # seconds the provider took, proofs included


class Minting:
    def __init__(
        self, inputs: MintInputs, http: HttpClient, digest: DigestKey, clock: Clock
    ) -> None:
        self._inputs = inputs
        self._http = http
        self._digest = digest
        self._clock = clock
        self._shared = SharedMints()

    async def mint(
        self,
        view: ProviderTokenView,
        provider: Provider,
        creds: Mapping[str, str],
        credentials_digest: str,
        cause: Cause,
        state: Mapping[str, str],
    ) -> Minted:
        """A new token, or the MintError that says why not (metrics and log done)."""
        now = self._clock()

        async def call() -> Token:
            # Here, not before: a token shared from another ProviderToken costs no
            # ServiceAccount token and no read of a client certificate.
            request = await self._inputs.request(view, provider, creds, self._http, now, state)
            return await provider.mint(request)

        started = time.perf_counter()
        try:
            with metrics.provider_context(view.provider):
                if provider.shareable(view.provider_spec):
                    token = await self._shared.mint(
                        share_key(view, credentials_digest, self._digest),
                        view.refresh,
                        now,
                        call,
                        newer_than=view.status.last_mint_time,
                        force=cause is Cause.RENEW_REQUESTED,
                    )
                else:
                    token = await call()
        except MintError as error:
            duration = time.perf_counter() - started
            metrics.MINTS.labels(view.provider, "failure", error.reason).inc()
            metrics.MINT_DURATION.labels(view.provider).observe(duration)
            # Once per failure in the log; a token retried every few seconds while its
            # provider is down repeats it at debug only (the status and metrics count).
            logger.log(
                logging.DEBUG if status.already_failing(view, error) else logging.WARNING,
                "mint failed %s/%s provider=%s cause=%s reason=%s duration=%.3fs",
                view.namespace,
                view.name,
                view.provider,
                cause,
                error.reason,
                duration,
            )
            raise
        duration = time.perf_counter() - started
        metrics.MINTS.labels(view.provider, "success", cause.value).inc()
        metrics.MINT_DURATION.labels(view.provider).observe(duration)
        return Minted(token, duration)
