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


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.8", False),
        ("172.20.1.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("::1", False),
        ("fe80::1", False),
        ("::ffff:169.254.169.254", False),  # the same, written as IPv6
        ("0.0.0.0", False),  # noqa: S104 - an address under test, not a bind
    ],
)
def test_private_loopback_and_link_local_addresses_are_refused(address: str, allowed: bool) -> None:
    assert EndpointPolicy().address_allowed(address) is allowed
    assert EndpointPolicy(allow_private_networks=True).address_allowed(address) is True


def test_an_ip_written_in_the_allowlist_is_permitted_and_only_that_one() -> None:
    policy = EndpointPolicy(allowed_hosts=normalise_hosts(["127.0.0.1:9400", "[::1]:8443"]))
    assert policy.address_allowed("127.0.0.1")
    assert policy.address_allowed("::1")
    assert not policy.address_allowed("127.0.0.2")
    assert not policy.address_allowed("169.254.169.254")
    with pytest.raises(EndpointRefused, match="--allow-private-networks"):
        policy.refuse_address("metadata.internal", "169.254.169.254")
