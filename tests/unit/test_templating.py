"""spec.target.template: the formats users write, the sandbox, the bounds and the messages."""

from __future__ import annotations

import base64
import gc
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import jinja2
import jinja2.sandbox
import pytest

from tokensync.templating import (
    Rendered,
    RenderInput,
    TemplateError,
    TemplateSpec,
    check,
    render,
)
from tokensync.templating.sandbox import ENV

# Characters that quote and base64 change, so each encoded form is a distinct secret.
TOKEN = "ghp_S3cr3tT0ken/with+odd=chars~xyz"
ID_TOKEN = "eyJ-id-token-value-Zm9vYmFy"
REFRESH = "refresh-value-never-rendered"
USERNAME = "robot$deployer"
PASSWORD = "hunter2-credential-password"
MINTED = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EXPIRES = MINTED + timedelta(hours=1)

# Every form in which a value could leak into a message.
SECRETS = (
    TOKEN,
    base64.b64encode(TOKEN.encode()).decode(),
    quote(TOKEN, safe=""),
    ID_TOKEN,
    REFRESH,
    USERNAME,
    PASSWORD,
    base64.b64encode(f"{USERNAME}:{TOKEN}".encode()).decode(),
)


def values(**changes: Any) -> RenderInput:
    fields: dict[str, Any] = {
        "token": TOKEN,
        "expires_at": EXPIRES,
        "minted_at": MINTED,
        "token_type": "Bearer",
        "scope": "read",
        "others": {"id_token": ID_TOKEN, "refresh_token": REFRESH},
        "credentials": {"username": USERNAME, "password": PASSWORD},
    }
    fields.update(changes)
    return RenderInput(**fields)


def spec(
    data: dict[str, str] | None = None,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    credential_keys: tuple[str, ...] = ("username",),
) -> TemplateSpec:
    return TemplateSpec(
        data=data or {},
        labels=labels or {},
        annotations=annotations or {},
        credential_keys=credential_keys,
    )


def spec_in(where: str, templates: dict[str, str]) -> TemplateSpec:
    """A spec with these templates in one section: data, labels or annotations."""
    sections = {"data": {}, "labels": {}, "annotations": {}, where: templates}
    return TemplateSpec(**sections, credential_keys=("username",))


def render_one(source: str, **changes: Any) -> str:
    return render(spec({"k": source}), values(**changes)).data["k"]


def refusal(source: str, where: str = "data", **changes: Any) -> TemplateError:
    """The error a template gets, from check() or render(), checked to hold no value."""
    template = spec_in(where, {"k": source})
    with pytest.raises(TemplateError) as caught:
        check(template)
        render(template, values(**changes))
    assert_safe(caught.value)
    assert caught.value.message.startswith(f'spec.target.template.{where}["k"]: ')
    return caught.value


def assert_safe(error: TemplateError) -> None:
    text = " ".join((error.message, str(error), repr(error), *map(str, error.args)))
    for secret in SECRETS:
        assert secret not in text
    # Raised without the original exception attached: its text and frames hold values.
    assert error.__context__ is None
    assert error.__cause__ is None


# The formats users write (docs examples): one row each.

DOCKER = (
    '{{ {"auths": {"registry.example.com": {"username": credentials.username, '
    '"password": token, "auth": (credentials.username ~ ":" ~ token) | b64enc}}} | json }}'
)


def check_docker(data: dict[str, str]) -> None:
    auth = json.loads(data[".dockerconfigjson"])["auths"]["registry.example.com"]
    assert auth["username"] == USERNAME
    assert auth["password"] == TOKEN
    assert base64.b64decode(auth["auth"]).decode() == f"{USERNAME}:{TOKEN}"


def check_json_file(data: dict[str, str]) -> None:
    assert json.loads(data["token.json"]) == {"token": TOKEN, "expiresAt": "2026-11-23T11:00:00Z"}
    assert " " not in data["token.json"]  # compact


FORMATS: list[tuple[str, dict[str, str], Callable[[dict[str, str]], None]]] = [
    (
        "header",
        {"authorization": "Bearer {{ token }}"},
        lambda data: _equal(data, {"authorization": f"Bearer {TOKEN}"}),
    ),
    ("dockerconfigjson", {".dockerconfigjson": DOCKER}, check_docker),
    (
        "json with expiry",
        {"token.json": '{{ {"token": token, "expiresAt": expiresAt} | json }}'},
        check_json_file,
    ),
    (
        "netrc keeps its final newline",
        {".netrc": "machine api.example.com login x password {{ token }}\n"},
        lambda data: _equal(
            data, {".netrc": f"machine api.example.com login x password {TOKEN}\n"}
        ),
    ),
    (
        "basic auth, two keys",
        {"username": "{{ credentials.username }}", "password": "{{ token }}"},
        lambda data: _equal(data, {"username": USERNAME, "password": TOKEN}),
    ),
    (
        "url with the token",
        {"url": "https://x:{{ token | urlquery }}@host/"},
        lambda data: _equal(
            data, {"url": "https://x:ghp_S3cr3tT0ken%2Fwith%2Bodd%3Dchars~xyz@host/"}
        ),
    ),
    (
        "tojson kept",
        {"t": '{{ {"token": token} | tojson }}'},
        lambda data: _equal(json.loads(data["t"]), {"token": TOKEN}),
    ),
]


def _equal(actual: object, expected: object) -> None:
    assert actual == expected


@pytest.mark.parametrize(("data", "verify"), [f[1:] for f in FORMATS], ids=[f[0] for f in FORMATS])
def test_each_format_renders(
    data: dict[str, str], verify: Callable[[dict[str, str]], None]
) -> None:
    template = spec(data)
    check(template)
    verify(render(template, values()).data)


def test_never_expiring_token() -> None:
    data = {
        "token.json": '{{ {"token": token, "expiresAt": expiresAt} | json }}',
        "never": "{{ expiresAtUnix is none }}",
    }
    rendered = render(spec(data), values(expires_at=None, token_type=None, scope=None)).data
    assert json.loads(rendered["token.json"]) == {"token": TOKEN, "expiresAt": ""}
    assert rendered["never"] == "True"
    assert render_one("[{{ tokenType }}|{{ scope }}]", token_type=None, scope=None) == "[|]"


def test_times_are_utc_rfc3339_and_unix_seconds() -> None:
    eastern = timezone(timedelta(hours=-5))
    out = render_one(
        "{{ expiresAt }} {{ expiresAtUnix }} {{ mintedAt }} {{ mintedAtUnix }}",
        expires_at=datetime(2026, 11, 23, 6, 0, 0, 900_000, tzinfo=eastern),
        # A naive time is UTC, not the machine's local time.
        minted_at=datetime(2026, 11, 23, 10, 0),
    )
    assert out == (
        f"2026-11-23T11:00:00Z {int(EXPIRES.timestamp())} "
        f"2026-11-23T10:00:00Z {int(MINTED.timestamp())}"
    )


def test_the_data_context_holds_exactly_its_names() -> None:
    out = render_one(
        "{{ token }}|{{ tokens|dictsort }}|{{ credentials|list }}|{{ tokenType }}|{{ scope }}"
    )
    # Refresh tokens never reach a template; credentials only as credentialKeys lists them.
    assert out == f"{TOKEN}|[('id_token', '{ID_TOKEN}')]|['username']|Bearer|read"
    for name in ("environ", "os", "range", "dict", "namespace", "joiner", "config", "spec"):
        assert refusal(f"{{{{ {name} }}}}").message.endswith(f"line 1: {name!r} is undefined")


@pytest.mark.parametrize("key", ["refresh_token", "refreshToken", "REFRESH-TOKEN"])
def test_refresh_tokens_are_dropped_however_spelled(key: str) -> None:
    out = render_one("{{ tokens|list }}", others={"id_token": ID_TOKEN, key: REFRESH})
    assert out == "['id_token']"


def test_credentials_not_listed_are_refused_statically() -> None:
    error = refusal("{{ credentials.password }}")
    assert error.message == (
        "spec.target.template.data[\"k\"]: line 1: credentials has no key 'password' "
        "(spec.target.template.credentialKeys does not list it)"
    )
    assert "credentials has no key 'password'" in refusal('{{ credentials["password"] }}').message
    # Jinja folds constants before the check, so this is seen statically too.
    assert (
        "credentials has no key 'password'" in refusal("{{ credentials['pass' ~ 'word'] }}").message
    )
    # At render, a key not listed is not there, however it is looked up.
    error = refusal("{{ credentials[('pass' ~ 'word')|lower] }}")
    assert error.message.endswith("(UndefinedError)")


def test_a_listed_credential_missing_from_the_secret_fails_without_values() -> None:
    template = spec({"k": "{{ credentials.missing }}"}, credential_keys=("username", "missing"))
    check(template)
    with pytest.raises(TemplateError) as caught:
        render(template, values())
    assert_safe(caught.value)
    assert caught.value.message == (
        'spec.target.template.data["k"]: line 1: '
        "an undefined variable, attribute or key was used (UndefinedError)"
    )


# Labels and annotations: a context with no secret in it.


@pytest.mark.parametrize("name", ["token", "tokens", "credentials"])
@pytest.mark.parametrize("where", ["labels", "annotations"])
def test_metadata_templates_cannot_name_a_secret(where: str, name: str) -> None:
    template = spec_in(where, {"k": f"x{{{{ {name} }}}}"})
    with pytest.raises(TemplateError) as caught:
        check(template)
    assert caught.value.message == (
        f'spec.target.template.{where}["k"]: line 1: {name!r} is not available to labels '
        "and annotations (a secret must not reach metadata)"
    )


def test_metadata_templates_render_the_times_and_type() -> None:
    rendered = render(
        spec(
            {"k": "{{ token }}"},
            labels={"example.com/expires-unix": "{{ expiresAtUnix }}", "type": "{{ tokenType }}"},
            annotations={"example.com/expires-at": "{{ expiresAt }}", "scope": "{{ scope }}"},
        ),
        values(),
    )
    assert rendered.labels == {
        "example.com/expires-unix": str(int(EXPIRES.timestamp())),
        "type": "Bearer",
    }
    assert rendered.annotations == {
        "example.com/expires-at": "2026-11-23T11:00:00Z",
        "scope": "read",
    }


@pytest.mark.parametrize(
    "key", ["tokensync.dev/role", "tokensync.dev/anything", "app.kubernetes.io/managed-by"]
)
@pytest.mark.parametrize("where", ["labels", "annotations"])
def test_the_operators_own_keys_are_refused(where: str, key: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check(spec_in(where, {key: "x"}))
    assert caught.value.message.startswith(f"spec.target.template.{where}[{json.dumps(key)}]: ")
    assert "reserved for the operator" in caught.value.message


@pytest.mark.parametrize(
    "key",
    [
        "",
        "has space",
        "-leading",
        "trailing-",
        "a/b/c",
        "/name",
        "prefix/",
        "UPPER.example.com/name",
        "x" * 64,
        "example.com/" + "x" * 64,
        "a" * 254 + "/name",
    ],
)
@pytest.mark.parametrize("where", ["labels", "annotations"])
def test_invalid_metadata_keys_are_refused(where: str, key: str) -> None:
    with pytest.raises(TemplateError, match=r"not a valid (label|annotation) key"):
        check(spec_in(where, {key: "x"}))


@pytest.mark.parametrize(
    "key", ["team", "example.com/team", "a.b-c_d", "x" * 63, "my-app.io/Team.Name_1"]
)
def test_valid_metadata_keys_pass(key: str) -> None:
    check(spec(labels={key: "x"}, annotations={key: "x"}))


def test_rendered_label_values_must_be_label_values() -> None:
    assert render(spec(labels={"scope": "{{ scope }}"}), values(scope="")).labels == {"scope": ""}
    assert render(spec(labels={"scope": "{{ scope }}"}), values(scope="a.b-c_D")).labels == {
        "scope": "a.b-c_D"
    }
    for bad in ("read write", "x" * 64, "-lead", "trail."):
        with pytest.raises(TemplateError) as caught:
            render(spec(labels={"scope": "{{ scope }}"}), values(scope=bad))
        assert caught.value.message.startswith(
            'spec.target.template.labels["scope"]: the rendered value is not a valid label value'
        )
        assert bad not in caught.value.message
    # Plain text needs no token to be judged: check() refuses it.
    with pytest.raises(TemplateError, match="not a valid label value"):
        check(spec(labels={"team": "two words"}))
    # Annotations take any text.
    assert render(spec(annotations={"a": "{{ scope }}"}), values(scope="read write")).annotations


# Every error path: where, what, never a value.


def test_jinja_itself_would_put_the_token_in_these_messages() -> None:
    """Why the messages are built from the exception class: the text holds the value."""
    env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined)
    with pytest.raises(jinja2.UndefinedError) as caught:
        env.from_string("{{ {}[token] }}").render(token=TOKEN)
    assert TOKEN in str(caught.value)


RUNTIME_ERRORS = [
    ("{{ {}[token] }}", 1, "(UndefinedError)"),
    ("{{ {}[token|b64enc] }}", 1, "(UndefinedError)"),
    ("{{ {}[token|urlquery] }}", 1, "(UndefinedError)"),
    ("{{ tokens[token] }}", 1, "(UndefinedError)"),
    ("{{ credentials[token] }}", 1, "(UndefinedError)"),
    ("\n\n{{ tokens[credentials.username ~ ':' ~ token] }}", 3, "(UndefinedError)"),
    ("{{ token|int + [] }}", 1, "(TypeError)"),
    ("{{ token + 1 }}", 1, "(TypeError)"),
    ("{{ [token] + token }}", 1, "(TypeError)"),
    ("{{ token - 1 }}", 1, "(TypeError)"),
    ("{{ {token: 1} < {token: 2} }}", 1, "(TypeError)"),
    ("{{ token.__class__ }}", 1, "(SecurityError)"),
    ("line 1\nline 2 {{ 1 / (token|length - token|length) }}", 2, "(ZeroDivisionError)"),
    ("{{ token|b64dec }}", 1, "b64dec: the value is not valid base64"),
    ("{{ (token ~ '==')|b64dec }}", 1, "b64dec: the value is not valid base64"),
    ("{{ '/w=='|b64dec }}", 1, "b64dec: the decoded bytes are not UTF-8 text"),
    ("{{ {'t': token, 'f': token.upper}|json }}", 1, "(TypeError)"),
]


@pytest.mark.parametrize(("source", "line", "what"), RUNTIME_ERRORS)
def test_runtime_errors_name_the_place_and_class_never_a_value(
    source: str, line: int, what: str
) -> None:
    template = spec({"auth": source})
    check(template)  # nothing static is wrong with them
    with pytest.raises(TemplateError) as caught:
        render(template, values())
    assert_safe(caught.value)
    assert caught.value.message.startswith(f'spec.target.template.data["auth"]: line {line}: ')
    assert caught.value.message.endswith(what)
    assert caught.value.where == 'spec.target.template.data["auth"]'
    assert caught.value.line == line


NOT_ALLOWED = "is not allowed in a Secret template"
STATIC_ERRORS = [
    ("{{ tokn }}", "line 1: 'tokn' is undefined"),
    ("ok\n{{ token }}{{ tokenn }}", "line 2: 'tokenn' is undefined"),
    ("{{ token ", "line 1: unexpected end of template, expected 'end of print statement'."),
    ("a\nb\n{% if token %}", "line 3: Unexpected end of template."),
    ("{{ token|center(80) }}", "line 1: no filter named 'center'"),
    ("{% if false %}{{ token|nope }}{% endif %}", "line 1: no filter named 'nope'"),
    ("{{ token is nope }}", "line 1: no test named 'nope'"),
    ("{% macro m() %}x{% endmacro %}", "line 1: {% macro %} " + NOT_ALLOWED),
    ("a\n{% autoescape true %}x{% endautoescape %}", "line 2: {% autoescape %} " + NOT_ALLOWED),
    ("{% set x %}y{% endset %}", "line 1: {% set ... endset %} " + NOT_ALLOWED),
    ("{% filter upper %}x{% endfilter %}", "line 1: {% filter %} " + NOT_ALLOWED),
    ("{% include 'x' %}", "line 1: {% include %} " + NOT_ALLOWED),
    ("{% import 'x' as y %}", "line 1: {% import %} " + NOT_ALLOWED),
    ("{% extends 'x' %}", "line 1: {% extends %} " + NOT_ALLOWED),
    ("{% block b %}x{% endblock %}", "line 1: {% block %} " + NOT_ALLOWED),
    (
        "{% for x in tokens recursive %}{{ loop(x) }}{% endfor %}",
        "line 1: recursive loops are not allowed in a Secret template",
    ),
    ("{{ credentials.nope }}", "line 1: credentials has no key 'nope'"),
]


@pytest.mark.parametrize(("source", "what"), STATIC_ERRORS)
def test_static_errors_are_found_by_check(source: str, what: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check(spec({"auth": source}))
    assert caught.value.message.startswith(f'spec.target.template.data["auth"]: {what}')
    assert_safe(caught.value)
    # render() finds the same without running anything.
    with pytest.raises(TemplateError) as again:
        render(spec({"auth": source}), values())
    assert again.value.message == caught.value.message


@pytest.mark.parametrize(
    ("key", "what"),
    [
        ("", "a Secret key must not be empty"),
        ("has space", "a Secret key must be at most 253 alphanumerics"),
        ("a/b", "a Secret key must be at most 253 alphanumerics"),
        ("x" * 254, "a Secret key must be at most 253 alphanumerics"),
    ],
)
def test_bad_secret_keys_are_refused(key: str, what: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check(spec({key: "{{ token }}"}))
    assert caught.value.message.startswith(f"spec.target.template.data[{json.dumps(key)}]: {what}")


def test_output_that_is_not_utf8_is_refused() -> None:
    error = refusal('{{ "\\ud800" }}')
    assert error.message.endswith("the rendered value is not valid UTF-8 text")


# The sandbox.

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ token.__class__.__base__ }}",
    "{{ tokens.__init__.__globals__ }}",
    "{{ (token|list).__class__ }}",
    "{{ cycler }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ self }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum }}",
    "{{ joiner() }}",
    "{{ namespace() }}",
    "{{ range(10) }}",
    "{{ dict(a=1) }}",
    "{{ config }}",
    "{{ request }}",
    "{{ '{0.__class__}'.format(token) }}",
    "{{ '{0}'.format_map(tokens) }}",
    "{{ tokens.pop('id_token') }}",
    "{{ tokens.update(a=1) }}",
    "{{ tokens.clear() }}",
    "{{ token|attr('__class__') }}",
    "{{ token.encode() }}",
    "{% set x = tokens.setdefault('a', token) %}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_are_refused(source: str) -> None:
    others = {"id_token": ID_TOKEN}
    refusal(source, others=others)
    assert others == {"id_token": ID_TOKEN}


def test_templates_cannot_change_what_they_are_given() -> None:
    given = values()
    with pytest.raises(TemplateError):
        render(spec({"k": "{{ tokens.pop('id_token') }}"}), given)
    assert given.others == {"id_token": ID_TOKEN, "refresh_token": REFRESH}


def test_the_methods_templates_need_work() -> None:
    out = render_one(
        "{{ token.upper() }}|{{ token.replace('/', '_') }}|{{ '-'.join(['a', 'b']) }}|"
        "{{ tokens.get('id_token') }}|{{ token.split('/')[0] }}|"
        "{% for k, v in tokens.items() %}{{ loop.index }}{{ loop.cycle('a', 'b') }}{{ k }}"
        "{% endfor %}"
    )
    assert out == (
        f"{TOKEN.upper()}|{TOKEN.replace('/', '_')}|a-b|{ID_TOKEN}|ghp_S3cr3tT0ken|1aid_token"
    )


def test_filters() -> None:
    assert render_one("{{ token|b64enc }}") == base64.b64encode(TOKEN.encode()).decode()
    assert render_one("{{ token|b64enc|b64dec }}") == TOKEN
    assert render_one("{{ 'é'|b64enc|b64dec }}") == "é"
    assert render_one("{{ 'a-._~ /?&=+é'|urlquery }}") == "a-._~%20%2F%3F%26%3D%2B%C3%A9"
    assert render_one('{{ {"a": [1, "x"], "b": none}|json }}') == '{"a":[1,"x"],"b":null}'
    assert render_one('{{ {"b": 1, "a": "<"}|tojson }}') == '{"a": "\\u003c", "b": 1}'
    assert render_one("{{ ['a', 'b']|join(',') }}|{{ 'a.b'|replace('.', '/') }}") == "a,b|a/b"
    assert render_one("{{ token|length }} {{ 'AbC'|lower }} {{ ' x '|trim }}") == (
        f"{len(TOKEN)} abc x"
    )
    assert render_one("{{ ['a', 'b']|map('upper')|join }} {{ {'b': 1, 'a': 2}|dictsort }}") == (
        "AB [('a', 2), ('b', 1)]"
    )
    # A listed credential the Secret lacks can be given a default.
    optional = spec({"k": "{{ credentials.extra | default('-') }}"}, credential_keys=("extra",))
    assert render(optional, values()).data == {"k": "-"}


# Bounds.


def _quickly_refused(source: str, what: str) -> None:
    """Refused with ``what``, after a bounded amount of work (counted, not timed)."""
    caught: list[TemplateError] = []
    work = _calls(lambda: caught.append(refusal(source)))
    assert what in caught[0].message
    assert work < 10 * 65536


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 10**9 }}",
        "{{ 10**9 * 'x' }}",
        "{{ token * 1000000000 }}",
        "{{ [token] * 10**9 }}",
        "{{ 'x' * 300000 }}",
        "{{ ''.join(['x'] * 2**20) }}",
        "{% set a = token ~ token %}" + "{% set a = a ~ a %}" * 30 + "{{ a|length }}",
        "{% set a = [token, token] %}" + "{% set a = a + a %}" * 30 + "{{ a|length }}",
        "{{ token|replace('', token)|replace('', token)|replace('', token) }}",
        "{{ ('\"' * 100000)|tojson|tojson }}",
        "{% set s = 'x' * 262144 %}{{ [s, s]|join }}",
        "{% set s = 'x' * 262144 %}{{ [s, s, s] }}",
        "{% set s = 'x' * 262144 %}{{ [s, s]|string }}",
        "{% set s = 'x' * 262144 %}{{ (s, s)|json }}",
        "{% set s = 'x' * 262144 %}{{ s ~ s }}",
    ],
)
def test_values_too_large_are_refused_before_they_are_built(source: str) -> None:
    _quickly_refused(source, "a value would be larger than 262144 characters")


@pytest.mark.parametrize(
    "source", ["{{ 10**(10**10) }}", "{{ 7**100000 }}", "{{ (2**4000) * (2**4000) }}"]
)
def test_huge_integers_are_refused(source: str) -> None:
    _quickly_refused(source, "an integer would be larger than 4096 bits")


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ("{{ ''.ljust(10**9) }}", "calling ljust() is not allowed"),
        ("{{ 'x'.center(1000000000) }}", "calling center() is not allowed"),
        ("{{ '{:>1000000000}'.format(1) }}", "calling format() is not allowed"),
        ("{{ '%1000000000s' % 1 }}", "'%' string formatting is not allowed"),
        ("{{ 'x'.expandtabs(1000000000) }}", "calling expandtabs() is not allowed"),
    ],
)
def test_callables_sized_by_an_argument_are_refused(source: str, what: str) -> None:
    _quickly_refused(source, what)


def test_nested_loops_are_capped() -> None:
    _quickly_refused(
        "{% for a in token * 100 %}{% for b in token * 100 %}{% endfor %}{% endfor %}",
        "the template's loops ran more than 65536 times",
    )


def test_many_values_each_small_enough_are_capped_together() -> None:
    _quickly_refused(
        "{% set s = 'x' * 200000 %}{% for i in 'x' * 100 %}{% set t = s ~ i %}{% endfor %}",
        "the template builds more than",
    )


# Work no hook sees on its own (Python compares, searches and counts in C; a loop body runs
# whole each time round), so it is charged by counts: what is read, and each node a loop
# runs. Each template asks for far more than the bounds allow.
PATHOLOGICAL = [
    pytest.param(
        # 3,400 x 3,400 = 11,560,000 iterations asked for.
        "{% for a in token * 100 %}{% for b in token * 100 %}{% endfor %}{% endfor %}",
        "the template's loops ran more than 65536 times",
        id="nested loops",
    ),
    pytest.param(
        # 60,000 x 50 comparisons of 200,000 characters each.
        "{% set s = 'x' * 200000 %}{% set t = 'x' * 200000 %}{% for i in 'x' * 60000 %}"
        + "{% if s == t %}{% endif %}" * 50
        + "{% endfor %}",
        "the template reads more than 4194304 characters of values",
        id="comparing long strings",
    ),
    pytest.param(
        "{% set s = 'x' * 200000 %}{% for i in 'x' * 60000 %}{% if 'y' in s %}{% endif %}"
        "{% if s is lower %}{% endif %}{% set n = s.count('y') %}{% endfor %}",
        "the template reads more than 4194304 characters of values",
        id="searching long strings",
    ),
    pytest.param(
        "{% set s = 'x ' * 100000 %}{% for i in 'x' * 60000 %}{{ s|wordcount }}{% endfor %}",
        "the template reads more than 4194304 characters of values",
        id="a filter over a long string",
    ),
    pytest.param(
        "{% for i in token * 2000 %}{% set l = [" + ", ".join(["i"] * 1000) + "] %}{% endfor %}",
        "the template's loops run more than 524288 template nodes",
        id="a wide loop body",
    ),
]


def _calls(action: Callable[[], object]) -> int:
    """The Python and C calls ``action`` makes: a measure of its work that, unlike a clock,
    gives the same answer every run whatever the machine's load."""
    count = 0

    def profile(frame: object, event: str, arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    # No collection in between: the finalizers it would run are not the template's work.
    gc.disable()
    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
        gc.enable()
    return count


@pytest.mark.parametrize(("source", "what"), PATHOLOGICAL)
def test_pathological_templates_are_refused_by_counts_not_a_clock(source: str, what: str) -> None:
    template = spec({"k": source})
    check(template)  # compiled and cached before anything is measured
    messages: list[str] = []

    def attempt() -> None:
        with pytest.raises(TemplateError) as caught:
            render(template, values())
        assert_safe(caught.value)
        messages.append(caught.value.message)

    attempt()
    work = [_calls(attempt), _calls(attempt)]
    # Deterministic: the same refusal after the same work, every time.
    assert messages == [f'spec.target.template.data["k"]: line 1: {what}'] * 3
    assert work[0] == work[1]
    # Quick: stopped at a bound, a small fraction of what the template asked for.
    assert work[0] < 10 * 65536


def test_a_loop_over_every_character_of_a_long_token_is_well_within_the_bounds() -> None:
    jwt = "eyJ" + "a/b-c" * 800
    out = render_one(
        "{% for c in token %}{% if c == '/' %}_{% elif c in '-+' %}.{% else %}{{ c }}"
        "{% endif %}{% endfor %}",
        token=jwt,
    )
    assert out == jwt.replace("/", "_").replace("-", ".")


def test_output_is_bounded_per_provider_token() -> None:
    at_the_bound = "{{ 'x' * 262144 }}"
    assert len(render_one(at_the_bound)) == 262144
    with pytest.raises(TemplateError) as caught:
        render(spec({"a": at_the_bound, "b": "x"}), values())
    assert caught.value.message == (
        'spec.target.template.data["b"]: the rendered output of this ProviderToken exceeds '
        "262144 bytes"
    )
    # Labels and annotations count too.
    with pytest.raises(TemplateError, match=r'annotations\["a"\]: the rendered output'):
        render(spec({"a": "{{ 'x' * 200000 }}"}, annotations={"a": "{{ 'y' * 70000 }}"}), values())
    # Streamed: a loop that would write gigabytes stops at the bound.
    _quickly_refused(
        "{% set s = 'x' * 100000 %}{% for i in 'x' * 60000 %}{{ s }}{% endfor %}",
        "the rendered output of this ProviderToken exceeds",
    )


def test_sources_over_16_kib_are_refused() -> None:
    check(spec({"k": "x" * 16384}))
    with pytest.raises(TemplateError, match="larger than 16384 bytes"):
        check(spec({"k": "x" * 16385}))
    with pytest.raises(TemplateError, match="larger than 16384 bytes"):
        check(spec({"k": "é" * 8193}))  # 16,386 bytes in 8,193 characters


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    error = refusal("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")
    assert error.message == 'spec.target.template.data["k"]: the template is nested too deeply'


# The compile cache.


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Sources compiled while the test runs, in order."""
    seen: list[str] = []
    original = ENV.compile

    def counting(source: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(source.find(jinja2.nodes.TemplateData).data)
        return original(source, *args, **kwargs)

    monkeypatch.setattr(ENV, "compile", counting)
    yield seen


def test_each_distinct_source_is_compiled_once(compiles: list[str]) -> None:
    marker = uuid.uuid4().hex  # a source no other test has compiled
    shared = f"{marker} Bearer {{{{ token }}}}"
    other = f"{marker} other {{{{ token }}}}"
    for number in range(50):
        template = spec({"a": shared, "b": shared}, labels={"x": f"{marker}"})
        check(template)
        out = render(template, values(token=f"token-{number}"))
        assert out.data["a"] == f"{marker} Bearer token-{number}"
    render(spec({"a": other}), values())
    assert compiles == [f"{marker} Bearer ", marker, f"{marker} other "]


# What must never show.


def test_reprs_show_no_values() -> None:
    given = values()
    rendered = render(spec({"k": DOCKER}), given)
    for text in (repr(given), str(given), repr(rendered), str(rendered)):
        for secret in SECRETS:
            assert secret not in text
    assert repr(given) == "RenderInput()"
    assert isinstance(rendered, Rendered)
    assert TOKEN in rendered.data["k"]


# Parsing spec.target.template.


def test_parse() -> None:
    assert TemplateSpec.parse(None) is None
    assert TemplateSpec.parse({}) is None
    assert TemplateSpec.parse({"credentialKeys": ["username"], "data": {}}) is None
    parsed = TemplateSpec.parse(
        {
            "data": {"auth": "Bearer {{ token }}"},
            "labels": {"team": "a"},
            "credentialKeys": ["username", "username", "password"],
        }
    )
    assert parsed == TemplateSpec(
        data={"auth": "Bearer {{ token }}"},
        labels={"team": "a"},
        annotations={},
        credential_keys=("username", "password"),
    )
    assert TemplateSpec.parse({"annotations": {"a": "{{ expiresAt }}"}}) is not None


@pytest.mark.parametrize(
    ("template", "where"),
    [
        ({"data": ["x"]}, "spec.target.template.data"),
        ({"data": {"k": 1}}, "spec.target.template.data"),
        ({"labels": {"k": None}}, "spec.target.template.labels"),
        ({"data": {"k": "x"}, "credentialKeys": "username"}, "spec.target.template.credentialKeys"),
        ({"data": {"k": "x"}, "credentialKeys": [1]}, "spec.target.template.credentialKeys"),
    ],
)
def test_parse_refuses_malformed_templates(template: dict[str, Any], where: str) -> None:
    with pytest.raises(TemplateError) as caught:
        TemplateSpec.parse(template)
    assert caught.value.message.startswith(f"{where}: ")
