"""The committed CRD and reference table are what the providers' declarations make.

``make crds`` (``python -m tokensync_dev.crdgen``) regenerates them; these tests fail,
saying so, when a committed file differs from what it would write.
"""

from __future__ import annotations

import difflib
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tokensync.providers.base import MintRequest, Provider, Token
from tokensync.providers.registry import PROVIDERS, Registry
from tokensync.providers.spec import TOKEN_URL, Credential, Field, SpecBlock
from tokensync_dev import crdgen


@pytest.mark.parametrize(("path", "render"), crdgen.FILES, ids=[str(p) for p, _ in crdgen.FILES])
def test_the_committed_file_is_generated(path: Path, render: Callable[[str], str]) -> None:
    committed = (crdgen.ROOT / path).read_text()
    generated = render(committed)
    if generated != committed:
        diff = difflib.unified_diff(
            committed.splitlines(keepends=True),
            generated.splitlines(keepends=True),
            "committed",
            "generated",
        )
        pytest.fail(f"{path} is out of date: run make crds\n{''.join(diff)}", pytrace=False)


def copy_of_the_repository(tmp_path: Path) -> Path:
    for path, _ in crdgen.FILES:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(crdgen.ROOT / path, tmp_path / path)
    return tmp_path


def test_check_names_a_hand_edited_crd_and_make_crds_mends_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_of_the_repository(tmp_path)
    crd = root / crdgen.CRD
    crd.write_text(crd.read_text().replace("default: biotz-platform-devices", "default: other"))
    assert crdgen.main(["--check", "--root", str(root)]) == 1
    assert capsys.readouterr().err == f"{crdgen.CRD} is out of date: run make crds\n"
    assert crdgen.main(["--root", str(root)]) == 0
    assert crdgen.main(["--check", "--root", str(root)]) == 0
    assert crd.read_text() == crdgen.render_crd((crdgen.ROOT / crdgen.CRD).read_text())


def test_hand_written_lines_and_comments_are_kept() -> None:
    committed = (crdgen.ROOT / crdgen.CRD).read_text()
    edited = crdgen.render_crd(committed)
    edited = edited.replace("\n          status:\n", "\n          # one's own\n          status:\n")
    edited = edited.replace("part-of: tokensync\n", "part-of: x\n")
    assert crdgen.render_crd(edited) == edited
    assert committed.startswith("# ")
    assert "# Helm never deletes a chart's crds/ on uninstall" in committed


def test_the_chart_reads_the_same_file() -> None:
    link = crdgen.ROOT / "deploy/helm/tokensync/crds/tokensync.dev_providertokens.yaml"
    assert link.is_symlink()
    assert link.resolve() == (crdgen.ROOT / crdgen.CRD).resolve()


def provider_schema(text: str) -> Any:
    document = yaml.safe_load(text)
    for step in crdgen.PROVIDER_PATH:
        document = document[step]
    return document


def test_the_exactly_one_rule_names_every_provider_in_registry_order() -> None:
    block = provider_schema((crdgen.ROOT / crdgen.CRD).read_text())
    assert list(block["properties"]) == list(PROVIDERS.names())
    assert block["x-kubernetes-validations"] == [
        {
            "rule": "[has(self.biotz), has(self.microshare), has(self.podero), has(self.basiq), "
            "has(self.oauth2)].filter(p, p).size() == 1",
            "message": "spec.provider must name exactly one provider: biotz, microshare, podero, "
            "basiq or oauth2",
        }
    ]


class Acme(Provider):
    """What a new provider declares: its block appears in the CRD and the reference."""

    name: ClassVar[str] = "acme"
    spec: ClassVar[SpecBlock] = SpecBlock(
        "Acme client credentials.",
        fields=(Field("region", enum=("eu", "us"), default="eu"), TOKEN_URL),
        credentials=(Credential("clientId"), Credential("clientSecret")),
    )

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        return True

    async def mint(self, request: MintRequest) -> Token:
        raise NotImplementedError


def test_a_new_provider_is_one_declaration_away_from_the_crd() -> None:
    providers = Registry((*PROVIDERS, Acme()))
    crd = crdgen.render_crd((crdgen.ROOT / crdgen.CRD).read_text(), providers)
    block = provider_schema(crd)
    assert block["properties"]["acme"] == {
        "type": "object",
        "description": "Acme client credentials. Credentials keys clientId, clientSecret.",
        "properties": {
            "region": {"type": "string", "enum": ["eu", "us"], "default": "eu"},
            "tokenUrl": TOKEN_URL.schema(),
        },
    }
    assert block["x-kubernetes-validations"][0]["message"].endswith("basiq, oauth2 or acme")
    assert "has(self.oauth2), has(self.acme)]" in block["x-kubernetes-validations"][0]["rule"]
    reference = crdgen.render_reference((crdgen.ROOT / crdgen.REFERENCE).read_text(), providers)
    assert "| `acme` | `region` (`eu`; or `us`) | `clientId`, `clientSecret` |  |" in reference
