"""What the operator remembers of one token between steps, in this process only.

Nothing here is persisted: a restarted operator starts with empty memories and reads
what it needs from the cluster (the Secret, the status). The token in hand lets a Secret
be written again (restored, re-rendered) without a new mint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tokensync.kube import ApiError
from tokensync.providers.base import Token
from tokensync.timing import write_retry_delay


@dataclass
class Memory:
    """Per-token state that lives only in this process (nothing secret is persisted)."""

    held: Token | None = None
    # What ``held`` was minted for (``ProviderTokenView.mint_question``).
    minted_for: tuple[object, ...] | None = None
    attempted_digest: str | None = None
    # The held token is not yet in the Secret and the status: write it, do not mint again.
    pending: bool = False
    write_failures: int = 0
    last_write_unreachable: bool = False
    # The generation whose template passed check(): not checked again at every look
    # (past the compile cache's size, each check would compile every template anew).
    template_checked: int | None = None

    def write_backoff(
        self, error: ApiError, serving_until: datetime | None, now: datetime
    ) -> timedelta:
        """How long until the token in hand is written again (``timing.write_retry_delay``).

        The count starts again when the API server goes from silent to refusing (or
        back): a server just back may refuse for a moment.
        """
        unreachable = error.status == 0
        if unreachable != self.last_write_unreachable:
            self.write_failures = 0
            self.last_write_unreachable = unreachable
        self.write_failures += 1
        held_until = self.held.expires_at if self.held is not None else None
        return write_retry_delay(
            self.write_failures,
            unreachable=unreachable,
            now=now,
            expiries=(serving_until, held_until),
        )
