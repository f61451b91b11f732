"""Render spec.target.template: the keys, labels and annotations of a target Secret.

Pure: no I/O, no Kubernetes, no logging, no clock. Templates are Jinja in a sandbox.

What a template can reach: its context and nothing else (no globals, no imports, no
includes). A data template sees the minted token, its expiry, minted time, type and scope,
the answer's other tokens (never a refresh token) and only the credentials keys the spec
lists in credentialKeys. A label or annotation template sees the expiry, minted time, type
and scope only: metadata is readable by far more people than Secret data. Every way a
template could spend memory or CPU is capped by a count (characters built and read, loop
iterations and the template nodes they run, value sizes, integer bits, output bytes),
because one ProviderToken's template runs in the same process as the other 4,999; no cap
is a clock, so whether a template passes never depends on machine load.

Why errors carry no values: Jinja's own messages quote the values a template was rendering
(a missing key is the token itself), and a TemplateError ends up in a ProviderToken's
status and events, which far more people read than the Secret. So a TemplateError
names the place (section, key, line) and the kind of failure only, static errors quote the
template's source only, and none is chained to the exception it replaces.

Modules, each with one job, imported one way (each only from those listed before it):
spec (the public types), keys (Kubernetes' naming rules), bounds (the caps and what a
render has spent), filters, sandbox (the environment), context (what a template sees),
analysis (compile, cache, static checks), rendering (check and render).
"""

from tokensync.templating.bounds import MAX_OUTPUT_BYTES, MAX_SOURCE_BYTES
from tokensync.templating.rendering import check, render
from tokensync.templating.spec import Rendered, RenderInput, TemplateError, TemplateSpec

__all__ = [
    "MAX_OUTPUT_BYTES",
    "MAX_SOURCE_BYTES",
    "RenderInput",
    "Rendered",
    "TemplateError",
    "TemplateSpec",
    "check",
    "render",
]
