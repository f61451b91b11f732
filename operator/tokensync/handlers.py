"""kopf glue, and nothing else: running kopf, its settings, watch events to the controller.

kopf only watches ProviderTokens here. It keeps no progress in annotations or status
(``on.event`` handlers are stateless) and posts no Events of its own: tokensync posts
the few that mean something. The labelled Secrets are watched by ``secret_watch``, not
kopf: its per-event work cost more than everything the Secret events were used for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf

from tokensync import names, preflight
from tokensync.config import OperatorConfig
from tokensync.kube import ApiError, authorization, load_configuration
from tokensync.runtime import Runtime


class NoDiffBase(kopf.DiffBaseStorage):
    """No essence to keep: tokensync has no on.create/on.update handlers to diff for.

    kopf builds an object's essence on every watch event, deep-copying the whole body
    (managedFields included); in a burst of new ProviderTokens that copy was a tenth of
    the operator's CPU (docs/decisions/0004-scale.md).
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


async def serve(config: OperatorConfig) -> None:
    """Check the install, assemble the operator, then let kopf watch until told to stop.

    The checks and the assembly run before kopf, not in its startup handler: kopf logs
    a failing startup handler's traceback and retries it for ever, so a missing
    namespace or RBAC verb became a process that stayed up and never worked. Here they
    raise ``StartupError``, which ``tokensync run`` prints as one line before exiting.
    """
    configuration = preflight.kube_configuration()
    probe = preflight.probe_client(configuration)
    try:
        await preflight.check(probe, config)
    finally:
        await probe.close()
    try:
        runtime = await Runtime.create(config, configuration)
    except (ApiError, ValueError) as error:
        # The checks passed a moment ago: the API server failed now (restarting, or a
        # corrupt digest key Secret). One line; the kubelet restarts the pod.
        raise preflight.StartupError(f"cannot load the operator's state: {error}") from None
    try:
        await runtime.start(config.health_port)
        await kopf.operator(
            clusterwide=config.clusterwide,
            namespaces=config.namespaces,
            standalone=True,
            # Given, never guessed: kopf's own guess asks getpass.getuser(), which raises
            # under a uid with no passwd entry (the image's 65532) unless POD_ID is set.
            identity=config.identity,  # type: ignore[arg-type]  # kopf's Identity is a str
            memo=kopf.Memo(config=config, runtime=runtime),
        )
    finally:
        await runtime.close()


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf watches as the account tokensync writes as, from the same configuration.

    kopf's own login tries the in-cluster account before the kubeconfig; tokensync's
    client uses KUBECONFIG when it is set. Two accounts in one process would make the
    startup check answer for one while the other watches. kopf calls this again when
    the API server refuses the token (401), which picks up a rotated one.
    """
    configuration = load_configuration()
    scheme, _space, token = (authorization(configuration) or "").partition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo.config
    if not config.clusterwide:
        # --namespace names namespaces exactly: there is nothing to discover, and listing
        # namespaces needs a verb deploy/rbac does not grant. kopf retried that 403 for
        # about 54 s before its first watch, then fell back to these names anyway.
        settings.scanning.disabled = True
    settings.posting.enabled = False
    settings.persistence.finalizer = "tokensync.dev/unused"  # no handler needs one
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Every replica watches (standalone kopf); tokensync's own Lease decides who writes.
    settings.peering.standalone = True


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL)
async def provider_token_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    runtime.controller.observe_token(event.get("type"), event["object"])
