"""One token for many ProviderTokens that would ask the provider the same question.

Providers such as Basiq ask clients to reuse tokens and limit how often /token may be
called. ProviderTokens in one namespace with the same provider, spec and credentials get
the same answer, so they share a mint: concurrent requests wait for the one in flight,
and a token minted recently enough is handed out again instead of calling the provider.
Only for providers whose tokens carry no per-holder state (``Provider.shareable``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime

from tokensync.digest import DigestKey
from tokensync.model import ProviderTokenView
from tokensync.providers.base import Token
from tokensync.timing import RefreshPolicy, renewal_time


def share_key(view: ProviderTokenView, credentials_digest: str, digest: DigestKey) -> str:
    """Equal for ProviderTokens that would ask the same question: same namespace,
    provider, spec block, credentials and fallback lifetime. Keyed, like every digest."""
    question = json.dumps(
        [
            view.namespace,
            view.provider,
            view.provider_spec,
            credentials_digest,
            str(view.fallback_lifetime),
        ],
        sort_keys=True,
        default=str,
    )
    return digest.of_text(question)


class SharedMints:
    def __init__(self) -> None:
        self._latest: dict[str, Token] = {}
        self._inflight: dict[str, asyncio.Future[Token]] = {}
        self._stores = 0

    def fresh(
        self, key: str, policy: RefreshPolicy, now: datetime, newer_than: datetime | None
    ) -> Token | None:
        """The latest shared token, if this holder would not yet want to renew it.

        ``newer_than`` is when the holder's current token was minted (whole seconds): a
        holder renewing must get a newer token than its own, never the same one back.
        """
        token = self._latest.get(key)
        if token is None:
            return None
        if newer_than is not None and token.minted_at.replace(microsecond=0) <= newer_than:
            return None
        if token.expires_at is None:
            return token
        due = renewal_time(token.minted_at, token.expires_at, policy, jitter=0.0)
        if due is not None and due > now:
            return token
        if token.expires_at <= now:
            del self._latest[key]
        return None

    async def mint(
        self,
        key: str,
        policy: RefreshPolicy,
        now: datetime,
        mint: Callable[[], Awaitable[Token]],
        *,
        newer_than: datetime | None = None,
        force: bool = False,
    ) -> Token:
        """A fresh shared token, or the one being minted, or a new mint. ``force``: new."""
        if not force:
            fresh = self.fresh(key, policy, now, newer_than)
            if fresh is not None:
                return fresh
            pending = self._inflight.get(key)
            if pending is not None:
                return await asyncio.shield(pending)
        future: asyncio.Future[Token] = asyncio.get_running_loop().create_future()
        # A failure nobody else waited for must not be reported as "never retrieved".
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._inflight[key] = future
        try:
            token = await mint()
        except BaseException as error:
            if isinstance(error, Exception):
                future.set_exception(error)
            else:
                future.cancel()
            raise
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]
        self._latest[key] = token
        self._stores += 1
        if self._stores % 1000 == 0:
            self._prune(now)
        future.set_result(token)
        return token

    def _prune(self, now: datetime) -> None:
        """Forget expired tokens: keys of specs and credentials that changed since."""
        for key in [k for k, t in self._latest.items() if t.expires_at and t.expires_at <= now]:
            del self._latest[key]
