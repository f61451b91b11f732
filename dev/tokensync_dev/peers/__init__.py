"""Other tools doing tokensync's job, built and run beside it in the benchmark (issue 19).

Each peer is built from its published Go module through the module proxy, pinned to one
release and cached outside the repository by version, like the control plane
(``tokensync_dev.devcluster.build``); none of its code is kept here.
"""
