"""Which endpoints the operator will call: the admin's allowlist, never the namespace user's."""

from __future__ import annotations

import pytest

from tokensync.endpoints import EndpointPolicy, EndpointRefused, normalise_hosts


def test_official_https_endpoints_need_no_allowlist() -> None:
    EndpointPolicy().check("https://auth.biotz.io/realms/x/token", official=True)


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        ("idp.example.com", "https://idp.example.com/token"),
        ("IDP.example.com", "https://idp.EXAMPLE.com/token"),
        ("idp.example.com:8443", "https://idp.example.com:8443/token"),
        ("idp.example.com:443", "https://idp.example.com/token"),
        ("a.example, idp.example.com", "https://idp.example.com/token"),
    ],
)
def test_allowlisted_hosts_pass(allowed: str, url: str) -> None:
    EndpointPolicy(allowed_hosts=normalise_hosts([allowed])).check(url, official=False)


@pytest.mark.parametrize(
    ("allowed", "url", "message"),
    [
        ("", "https://idp.example.com/token", "not in the operator's --allowed-hosts"),
        ("idp.example.com:8443", "https://idp.example.com/token", "--allowed-hosts"),
        ("example.com", "https://evil.example.com/token", "--allowed-hosts"),
        ("idp.example.com", "https://idp.example.com.evil.io/token", "--allowed-hosts"),
        ("idp.example.com", "ftp://idp.example.com/token", "absolute http(s) URL"),
        ("idp.example.com", "/relative", "absolute http(s) URL"),
    ],
)
def test_other_hosts_are_refused(allowed: str, url: str, message: str) -> None:
    policy = EndpointPolicy(allowed_hosts=normalise_hosts([allowed]))
    with pytest.raises(EndpointRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        policy.check(url, official=False)


def test_plain_http_needs_the_insecure_flag_even_when_allowlisted() -> None:
    hosts = normalise_hosts(["127.0.0.1:8080"])
    with pytest.raises(EndpointRefused, match="--allow-insecure-http"):
        EndpointPolicy(allowed_hosts=hosts).check("http://127.0.0.1:8080/t", official=False)
    EndpointPolicy(allowed_hosts=hosts, allow_insecure_http=True).check(
        "http://127.0.0.1:8080/t", official=False
    )
