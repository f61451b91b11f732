"""tokensync: keeps SaaS API tokens fresh in Kubernetes Secrets."""

__version__ = "0.1.0"
