"""The soak's leak search: any issued token or credential in logs, Events or statuses.

Thousands of secrets over megabytes of text: the text is cut into runs of the characters
secrets are made of, and each run is searched through an index of the secrets' first
``PREFIX`` characters, so the cost grows with the text, not with text times secrets.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

PREFIX = 12
# Hex, base64 (+/=), base64url and JWTs (. - _), the soak's passwords and keys.
_RUN = re.compile(rf"[A-Za-z0-9+/=._\-@]{{{PREFIX},}}")


class LeakSearch:
    def __init__(self, secrets: Iterable[tuple[str, str]]) -> None:
        """``secrets``: (what it is, value); values shorter than ``PREFIX`` are skipped."""
        self.index: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self.skipped = 0
        for what, value in secrets:
            if len(value) < PREFIX:
                self.skipped += 1
                continue
            self.index[value[:PREFIX]].append((what, value))

    def search(self, text: str) -> list[str]:
        """What kind of secret each hit was (never the value)."""
        hits = []
        for match in _RUN.finditer(text):
            run = match.group()
            for i in range(len(run) - PREFIX + 1):
                for what, value in self.index.get(run[i : i + PREFIX], ()):
                    if run.startswith(value, i):
                        hits.append(what)
        return hits
