"""Rollout on rotation (``--rollouts``): restart the workloads that asked for it.

A Deployment, StatefulSet or DaemonSet opts in with the label
``tokensync.dev/restart-on-rotation: "true"`` and names the target Secrets in the
annotation of the same key. The ``RolloutSweeper`` looks at one namespace at a time: it
lists the opted-in workloads with that label selector (three LISTs, never every workload;
``gather``), reads each named Secret's token from the Secret cache, lets
``rollout_policy`` decide, patches, and says what it did (``notices``). What was restarted
for which token is recorded on the workloads, so this process keeps nothing that a crash
could lose (docs/decisions/0010-rollouts.md).
"""

from tokensync.rollouts.sweeper import RolloutSweeper, Timing

__all__ = ["RolloutSweeper", "Timing"]
