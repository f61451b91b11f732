"""The soak's plan: tokens (provider, credentials, lifetime) and faults, from one seed.

Pure: no I/O, no clock. ``random.Random(seed)`` draws everything, so a seed recorded in the
results replays the same tokens and the same fault schedule.
"""

from __future__ import annotations

import base64
import random
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

PROVIDERS = ("oauth2", "biotz", "podero", "basiq", "microshare")
PROVIDER_FAULTS = ("provider_down", "provider_slow", "provider_429", "provider_garbage")
INFRA_FAULTS = ("apiserver_restart", "etcd_restart", "operator_kill", "leader_kill")
# After an infra fault, this long before the next one: the operator catches up first.
INFRA_GAP_S = 30.0
PROVIDER_GAP_S = 10.0


@dataclass
class PlannedToken:
    index: int
    provider: str
    subject: str
    credentials: dict[str, str]
    lifetime_s: int

    @property
    def name(self) -> str:
        return f"t{self.index}"

    @property
    def secret(self) -> str:
        return f"t{self.index}-token"


@dataclass
class PlannedFault:
    kind: str
    start_s: float  # seconds after the fault phase begins
    duration_s: float
    target: str  # a provider, "kube-apiserver", "etcd", "standby", "any", "leader"
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _words(rng: random.Random, n: int = 24) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(rng.choice(alphabet) for _ in range(n))


def plan_tokens(
    rng: random.Random, count: int, lifetime_min: int, lifetime_max: int
) -> list[PlannedToken]:
    """Round-robin over the providers, each token its own credentials and lifetime."""
    tokens = []
    for index in range(count):
        provider = PROVIDERS[index % len(PROVIDERS)]
        lifetime = rng.randint(lifetime_min, lifetime_max)
        secret = f"soak-{_words(rng)}"
        if provider == "oauth2":
            subject = f"client-{index}"
            credentials = {"clientId": subject, "clientSecret": secret}
        elif provider == "podero":
            subject = f"podero-{index}"
            credentials = {"clientId": subject, "clientSecret": secret}
        elif provider == "biotz":
            subject = f"device-{index}@devices.data-ingestion.biotz.io"
            credentials = {"username": subject, "password": secret}
        elif provider == "basiq":
            subject = f"partner-{index}"
            pair = f"{uuid.UUID(int=rng.getrandbits(128))}:{uuid.UUID(int=rng.getrandbits(128))}"
            credentials = {"apiKey": base64.b64encode(pair.encode()).decode()}
        else:
            subject = f"ops-{index}@example.com"
            credentials = {"username": subject, "password": secret, "apiKey": f"app-{_words(rng)}"}
        tokens.append(PlannedToken(index, provider, subject, credentials, lifetime))
    return tokens


def _duration(
    rng: random.Random, kind: str, lifetime_min: int, lifetime_max: int, long: bool
) -> float:
    if kind == "provider_down":
        # Long ones outlast (most) tokens' lifetimes, so tokens expire and recovery shows.
        if long:
            return rng.uniform(lifetime_min + 10, 1.1 * lifetime_max)
        return rng.uniform(10, 60)
    if kind == "provider_slow":
        return rng.uniform(20, max(30.0, 0.8 * lifetime_min))
    if kind in ("provider_429", "provider_garbage"):
        return rng.uniform(20, max(40.0, 1.2 * lifetime_min))
    if kind == "apiserver_restart":
        return rng.uniform(3, 15)  # stopped this long, then started (ready within ~10 s)
    if kind == "etcd_restart":
        return rng.uniform(2, 10)
    return rng.uniform(1, 2)  # operator_kill, leader_kill: restarted like a kubelet would


def plan_faults(
    rng: random.Random,
    *,
    phase_s: float,
    every_s: float,
    replicas: int,
    lifetime_min: int,
    lifetime_max: int,
    provider_timeout_s: float,
) -> list[PlannedFault]:
    """Faults at random times within ``phase_s`` (each one ended by then), one every
    ``every_s`` on average. Every kind comes once first (in a random order), then kinds at
    random. The first provider outage is a long one, the second a short one. A provider has
    one fault at a time; infra faults (control plane, operator) one at a time, 30 s apart."""
    kinds = [*PROVIDER_FAULTS, *INFRA_FAULTS]
    if replicas < 2:
        kinds.remove("leader_kill")
    first_round = kinds[:]
    rng.shuffle(first_round)
    provider_free = dict.fromkeys(PROVIDERS, 0.0)
    infra_free = 0.0
    downs = 0
    faults: list[PlannedFault] = []
    clock = 0.0
    skipped = 0
    while True:
        clock += rng.uniform(0.5, 1.5) * every_s
        if clock >= phase_s:
            break
        kind = first_round.pop(0) if first_round else rng.choice(kinds)
        long = kind == "provider_down" and (downs == 0 or (downs > 1 and rng.random() < 0.5))
        duration = _duration(rng, kind, lifetime_min, lifetime_max, long)
        params: dict[str, Any] = {}
        if kind in PROVIDER_FAULTS:
            target = rng.choice(PROVIDERS)
            start = max(clock, provider_free[target])
            if kind == "provider_down":
                params["long"] = long
            elif kind == "provider_slow":
                params["latency"] = provider_timeout_s + 5
            elif kind == "provider_429":
                params["retry_after"] = rng.choice((1, 5, 10, 30))
            elif kind == "provider_garbage":
                params["variant"] = rng.choice(("html", "json", "truncated"))
        else:
            target = {
                "apiserver_restart": "kube-apiserver",
                "etcd_restart": "etcd",
                "operator_kill": "standby" if replicas > 1 else "operator",
                "leader_kill": "leader",
            }[kind]
            start = max(clock, infra_free)
        if start + duration > phase_s:
            if kind == "provider_down" and long:
                # Too long for what is left: a short one instead.
                long = False
                params["long"] = False
                duration = _duration(rng, kind, lifetime_min, lifetime_max, False)
            if start + duration > phase_s:
                skipped += 1
                continue
        if kind == "provider_down":
            downs += 1
        if kind in PROVIDER_FAULTS:
            provider_free[target] = start + duration + PROVIDER_GAP_S
        else:
            infra_free = start + duration + INFRA_GAP_S
        faults.append(PlannedFault(kind, round(start, 1), round(duration, 1), target, params))
    faults.sort(key=lambda f: f.start_s)
    return faults


def missing_kinds(faults: list[PlannedFault], replicas: int) -> list[str]:
    kinds = set(PROVIDER_FAULTS) | set(INFRA_FAULTS)
    if replicas < 2:
        kinds.discard("leader_kill")
    return sorted(kinds - {f.kind for f in faults})
