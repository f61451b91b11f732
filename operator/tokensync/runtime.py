"""Assembles the running operator: clients, the digest key, the caches, the Secret
watch, the reconciler, the controller, and the one clock they all read."""

from __future__ import annotations

import base64
import logging
import random
import secrets as stdlib_secrets
from dataclasses import dataclass

from kubernetes.client import Configuration

from tokensync.clock import system_clock
from tokensync.config import OperatorConfig
from tokensync.controller import Controller
from tokensync.digest import DigestKey
from tokensync.endpoints import HttpClient
from tokensync.events import EventRecorder
from tokensync.health import Health
from tokensync.kube import Conflict, KubeApi, NotFound, authorization
from tokensync.leader import LeaderElector
from tokensync.mint_inputs import token_audiences
from tokensync.model import decode_secret_data
from tokensync.preflight import StartupError
from tokensync.providers.registry import PROVIDERS
from tokensync.reconcile import Reconciler
from tokensync.rollouts import RolloutSweeper
from tokensync.secret_cache import SecretCache
from tokensync.secret_watch import SecretWatch
from tokensync.secret_writes import SecretWrites
from tokensync.token_cache import TokenCache

logger = logging.getLogger(__name__)

_DIGEST_KEY_FIELD = "key"


async def load_digest_key(kube: KubeApi, namespace: str, name: str) -> DigestKey:
    """The HMAC key lives in a Secret of the operator's namespace; made once, then kept.

    It must outlive restarts: a new key would make every digest look changed and
    re-mint every token.
    """
    secret = await kube.get_secret(namespace, name)
    if secret is None:
        fresh = base64.b64encode(stdlib_secrets.token_bytes(32)).decode("ascii")
        try:
            secret = await kube.create_secret(
                namespace,
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": name,
                        "labels": {"app.kubernetes.io/part-of": "tokensync"},
                    },
                    "type": "Opaque",
                    "stringData": {_DIGEST_KEY_FIELD: fresh},
                },
            )
            logger.info("digest key Secret %s/%s created", namespace, name)
        except Conflict:  # another replica created it first: use that one
            secret = await kube.get_secret(namespace, name)
        except NotFound:
            # The only 404 a create can get: the namespace itself is missing.
            raise StartupError(
                f'the operator namespace "{namespace}" does not exist: create it, or name '
                "the operator's own namespace with --operator-namespace (env "
                "TOKENSYNC_OPERATOR_NAMESPACE or POD_NAMESPACE)"
            ) from None
    if secret is None:
        raise RuntimeError(f"digest key Secret {namespace}/{name} vanished while reading it")
    encoded = decode_secret_data(secret).get(_DIGEST_KEY_FIELD, "")
    return DigestKey(base64.b64decode(encoded))


@dataclass
class Runtime:
    kube: KubeApi
    http: HttpClient
    controller: Controller
    events: EventRecorder
    health: Health
    # Every replica watches, leader or standby (0005): a standby's cache stays warm.
    secret_watch: SecretWatch
    elector: LeaderElector | None = None
    # --rollouts only: without the flag nothing here ever calls a workload API.
    rollouts: RolloutSweeper | None = None

    @classmethod
    async def create(cls, config: OperatorConfig, configuration: Configuration) -> Runtime:
        kube = KubeApi(configuration, in_flight=config.api_in_flight)
        http = HttpClient(
            config.endpoints, ca_file=config.ca_file, timeout_s=config.provider_timeout_s
        )
        try:
            digest = await load_digest_key(
                kube, config.operator_namespace, config.digest_key_secret
            )
            secrets = SecretCache(kube)
            secret_watch = SecretWatch(kube, secrets, namespaces=config.namespaces)
            await secret_watch.prime()
        except BaseException:
            # Closed here, or the exit prints "Unclosed client session" after the one line.
            await http.close()
            await kube.close()
            raise
        clock = system_clock
        events = EventRecorder(kube, clock=clock)
        events.start()
        tokens = TokenCache()
        rollouts = (
            RolloutSweeper(
                kube,
                secrets=secrets,
                tokens=tokens,
                events=events,
                clock=clock,
                jitter=random.random,
            )
            if config.rollouts
            else None
        )
        reconciler = Reconciler(
            kube=kube,
            secrets=secrets,
            secret_writes=SecretWrites(kube, secrets),
            http=http,
            providers=PROVIDERS,
            digest=digest,
            events=events,
            clock=clock,
            jitter=random.random,
            on_status=tokens.observe_own_status,
            on_token_changed=rollouts.token_changed if rollouts is not None else None,
            # No token for the API server's own audiences is ever requested for a client.
            forbidden_audiences=token_audiences(authorization(configuration)),
        )
        controller = Controller(
            reconciler, tokens=tokens, secrets=secrets, workers=config.workers, clock=clock
        )

        def alive() -> bool:
            # A dead Secret watch would leave drift unseen for ever: restart the process.
            return (
                controller.queue.running()
                and secret_watch.running()
                and (rollouts is None or rollouts.running())
            )

        health = Health(kube.reachable, alive=alive)
        runtime = cls(
            kube=kube,
            http=http,
            controller=controller,
            events=events,
            health=health,
            secret_watch=secret_watch,
            rollouts=rollouts,
        )
        if config.leader_election:
            runtime.elector = LeaderElector(
                kube,
                namespace=config.operator_namespace,
                name="tokensync-leader",
                identity=config.identity,
                on_change=runtime._leadership,
                clock=clock,
            )
        return runtime

    def _leadership(self, leading: bool) -> None:
        if leading:
            self.controller.queue.resume()
            self.controller.requeue_all()
            if self.rollouts is not None:
                self.rollouts.resume()
        else:
            self.controller.queue.pause()
            if self.rollouts is not None:
                self.rollouts.pause()
        self.health.set_leading(leading)

    async def start(self, health_port: int) -> None:
        if self.elector is not None:
            # A replica works only once it holds the Lease; until then it is standby.
            self.controller.queue.pause()
            if self.rollouts is not None:
                self.rollouts.pause()
            self.health.leading = False
        self.controller.start()
        # From the resourceVersions of the LISTs in ``create``: nothing in between is missed.
        self.secret_watch.start(self.controller.observe_secret)
        if self.rollouts is not None:
            self.rollouts.start()
        await self.health.start(health_port)
        self.health.started = True
        self.health.publish()
        if self.elector is not None:
            self.elector.start()

    async def close(self) -> None:
        if self.elector is not None:
            await self.elector.stop()
        await self.health.stop()
        await self.secret_watch.stop()
        await self.controller.stop()
        if self.rollouts is not None:
            await self.rollouts.stop()
        await self.events.stop()
        await self.http.close()
        await self.kube.close()
