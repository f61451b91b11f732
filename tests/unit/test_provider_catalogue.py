"""Every registered provider comes with everything a provider takes, and its declaration holds.

A provider is one module registered in operator/tokensync/providers/registry.py, one fake
in tests/fakes/, one tests/providers/test_<name>.py, one example under examples/ and one
section in docs/providers.md (docs/providers.md, "Adding a provider"). These tests name
what is missing; none needs a cluster.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.providers import Fakes, fake_classes
from tokensync.providers.registry import PROVIDERS
from tokensync.providers.spec import Credential, Field, SpecBlock

ROOT = Path(__file__).resolve().parents[2]
NAMES = PROVIDERS.names()


def docs_sections() -> dict[str, str]:
    """docs/providers.md's one-word ``## name`` sections, each up to the next heading of
    any kind (the last provider's section does not run on into "Adding a provider")."""
    parts = re.split(r"^## (.+?)[ \t]*$", (ROOT / "docs/providers.md").read_text(), flags=re.M)
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    return {title: text for title, text in sections.items() if " " not in title}


def example_blocks() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Per provider: (example file, provider block) of each ProviderToken under examples/."""
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "ProviderToken":
                for name, block in document["spec"]["provider"].items():
                    found.setdefault(name, []).append((path.name, block or {}))
    return found


@pytest.mark.parametrize("name", NAMES)
def test_it_has_a_fake(name: str) -> None:
    assert name in fake_classes(), f"no FakeProvider in tests/fakes/ has provider = {name!r}"


def test_every_fake_plays_a_registered_provider_and_fakes_reach_it() -> None:
    assert sorted(fake_classes()) == sorted(NAMES)
    with contextlib.ExitStack() as stack:
        bundle = Fakes.create()
        for fake in bundle.all():
            stack.enter_context(fake)
        for name in NAMES:
            fake = bundle.for_provider(name)
            assert fake.provider == name
            assert fake.token_url.startswith(fake.base_url + "/"), name
        with pytest.raises(LookupError, match="no fake plays provider 'acme'"):
            bundle.for_provider("acme")


@pytest.mark.parametrize("name", NAMES)
def test_it_has_a_test_file(name: str) -> None:
    path = Path("tests/providers") / f"test_{name}.py"
    assert (ROOT / path).is_file(), f"no {path}"


@pytest.mark.parametrize("name", NAMES)
def test_it_has_an_example_with_declared_fields_only(name: str) -> None:
    examples = example_blocks()
    assert name in examples, f"no example under examples/ has spec.provider.{name}"
    block = PROVIDERS.get(name).spec
    for file, fields in examples[name]:
        for field, value in fields.items():
            declared = block.field(field)  # KeyError: not a field of the block
            assert not declared.enum or value in declared.enum, (file, field, value)


def test_every_example_names_a_registered_provider() -> None:
    assert set(example_blocks()) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_it_has_a_docs_section_naming_its_credentials_keys(name: str) -> None:
    sections = docs_sections()
    assert name in sections, f"docs/providers.md has no '## {name}' section"
    keys = PROVIDERS.get(name).spec.credential_keys()
    missing = [key for key in keys if f"`{key}`" not in sections[name]]
    assert not missing, f"docs/providers.md '## {name}' does not name {missing}"


def test_the_docs_sections_follow_the_registry() -> None:
    assert list(docs_sections()) == list(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_its_declared_defaults_pass_its_own_schema(name: str) -> None:
    for field in PROVIDERS.get(name).spec.fields:
        default = field.default
        if default is None:
            continue
        assert isinstance(default, int if field.kind == "integer" else str), field.name
        if isinstance(default, str):
            assert len(default) >= (field.min_length or 0), field.name
            assert len(default) <= (field.max_length or len(default)), field.name
            assert field.pattern is None or re.search(field.pattern, default), field.name


# The declaration itself.
BLOCK = SpecBlock(
    "A test block.",
    fields=(
        Field("mode", enum=("a", "b"), default="a"),
        Field("name", default="n", min_length=1),
        Field("free"),
    ),
    credentials=(
        Credential("id"),
        Credential("secret", note="kept safe", when=("mode", ("a",))),
        Credential("key", when=("mode", ("b",))),
        Credential("pin", when=("mode", ("b",))),
    ),
)


def test_a_value_is_the_given_one_or_the_declared_default() -> None:
    assert BLOCK.value({}, "mode") == "a"
    assert BLOCK.value({"mode": None}, "mode") == "a"  # as the API server prunes a null
    assert BLOCK.value({"mode": "b"}, "mode") == "b"
    # Empty where a default exists: a manifest `tokensync mint` reads, never admitted.
    assert BLOCK.value({"mode": ""}, "mode") == "a"
    assert BLOCK.value({}, "free") is None
    assert BLOCK.value({"free": ""}, "free") == ""
    with pytest.raises(KeyError, match="no field 'typo' is declared"):
        BLOCK.value({}, "typo")


def test_credentials_follow_the_fields_they_depend_on() -> None:
    assert BLOCK.required_credentials({}) == ("id", "secret")
    assert BLOCK.required_credentials({"mode": "b"}) == ("id", "key", "pin")
    assert BLOCK.credential_keys() == ("id", "secret", "key", "pin")
    assert BLOCK.describe_credentials() == "id; secret (kept safe) (mode a); key, pin (mode b)"
    assert BLOCK.schema()["description"] == (
        "A test block. Credentials keys id; secret (kept safe) (mode a); key, pin (mode b)."
    )


def test_a_field_kept_out_of_the_crd_says_its_default() -> None:
    field = Field("kind", description="What kind", default="x", default_in_crd=False)
    assert field.schema() == {"type": "string", "description": "What kind; default x"}


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda: Field("f", enum=("a",), default="b"), "not in its enum"),
        (lambda: Field("f", kind="integer", enum=("a",)), "only a string field"),
        (lambda: Field("f", max_properties=3), "only a string-map"),
        (lambda: SpecBlock("d", fields=(Field("f"), Field("f")), credentials=()), "twice"),
        (
            lambda: SpecBlock(
                "d",
                fields=(BLOCK.fields[0],),
                credentials=(Credential("k", when=("mode", ("c",))),),
            ),
            "mode has no value",
        ),
    ],
    ids=["default outside enum", "enum on integer", "map limit on string", "twice", "bad when"],
)
def test_a_wrong_declaration_fails_at_import(declare: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        declare()
