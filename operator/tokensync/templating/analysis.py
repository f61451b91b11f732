"""Everything known about a template before it runs: compiled once, checked statically.

A source is parsed, refused if it uses a construct a Secret template must not, read for
the names and credentials keys it uses, rewritten so that concatenation, loops and
comparisons go through bounded filters, and compiled; all of it cached by source, since thousands of
ProviderTokens share a handful of templates. Messages here quote the template's own
source only: no value exists yet.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from jinja2 import Template, TemplateSyntaxError, meta, nodes
from jinja2.visitor import NodeTransformer

from tokensync.templating.bounds import MAX_SOURCE_BYTES
from tokensync.templating.context import DATA_NAMES, METADATA_NAMES, SECRET_NAMES
from tokensync.templating.filters import (
    CONCAT_FILTER,
    INTERNAL_FILTERS,
    ITERATE_FILTER,
    READ_FILTER,
)
from tokensync.templating.keys import LABEL_VALUE_RULE, key_problem, location, valid_label_value
from tokensync.templating.sandbox import ENV
from tokensync.templating.spec import TemplateError, TemplateSpec

_CACHE_SIZE: Final = 1024

# Compiled templates are shared by every ProviderToken with the same source, so their
# traceback frames carry this fixed name, not the location (which the caller supplies).
FILENAME: Final = "<tokensync-template>"

# Everything that buffers output (macros, call and filter blocks, block sets, blocks) is
# left out: buffered output escapes the streaming bound, and a Secret template needs none.
_ALLOWED_STATEMENTS: Final = (nodes.Output, nodes.If, nodes.For, nodes.Assign, nodes.With)
_STATEMENT_TAGS: Final[Mapping[type[nodes.Node], str]] = {
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.FilterBlock: "filter",
    nodes.AssignBlock: "set ... endset",
    nodes.Block: "block",
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
    # do, break and continue need extensions that are not loaded: unknown tags already.
    nodes.ScopedEvalContextModifier: "autoescape",
}


@dataclass(frozen=True)
class Compiled:
    template: Template
    # Names the template reads from its context, each with the first line it does so.
    names: Mapping[str, int]
    # credentials.<key> and credentials["<key>"] the template names literally.
    credential_refs: Mapping[str, int]
    # The output when the template is plain text.
    constant: str | None


@dataclass(frozen=True)
class _Failure:
    line: int | None
    what: str


def templates(spec: TemplateSpec) -> Iterator[tuple[str, str, str, Compiled]]:
    """Each template with its section, key and location, checked statically.

    Raises TemplateError.
    """
    for key, source in spec.data.items():
        where = location("data", key)
        problem = key_problem("data", key)
        if problem is not None:
            raise TemplateError(where, problem)
        yield "data", key, where, _static(where, source, DATA_NAMES, spec.credential_keys)
    for section in ("labels", "annotations"):
        for key, source in getattr(spec, section).items():
            where = location(section, key)
            problem = key_problem(section, key)
            if problem is not None:
                raise TemplateError(where, problem)
            compiled = _static(where, source, METADATA_NAMES, ())
            if (
                section == "labels"
                and compiled.constant is not None
                and not valid_label_value(compiled.constant)
            ):
                raise TemplateError(where, f"not a valid label value ({LABEL_VALUE_RULE})")
            yield section, key, where, compiled


def _static(
    where: str, source: str, allowed: frozenset[str], credential_keys: tuple[str, ...]
) -> Compiled:
    # Checked before the cache so an oversized source is never kept as a cache key.
    if len(source) > MAX_SOURCE_BYTES:
        raise TemplateError(where, f"the template is larger than {MAX_SOURCE_BYTES} bytes")
    compiled = compile_source(source)
    if isinstance(compiled, _Failure):
        raise TemplateError(where, compiled.what, compiled.line)
    for name, line in compiled.names.items():
        if name in allowed:
            continue
        if name in SECRET_NAMES:
            raise TemplateError(
                where,
                f"{name!r} is not available to labels and annotations "
                "(a secret must not reach metadata)",
                line,
            )
        raise TemplateError(where, f"{name!r} is undefined", line)
    for key, line in compiled.credential_refs.items():
        if key not in credential_keys:
            raise TemplateError(
                where,
                f"credentials has no key {key!r} (spec.target.template.credentialKeys "
                "does not list it)",
                line,
            )
    return compiled


@lru_cache(maxsize=_CACHE_SIZE)
def compile_source(source: str) -> Compiled | _Failure:
    """Parse, validate and compile one source; failures are cached too (they are static)."""
    if len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        return _Failure(None, f"the template is larger than {MAX_SOURCE_BYTES} bytes")
    try:
        tree = ENV.parse(source)
        problem = _refused_construct(tree)
        if problem is not None:
            return _Failure(*problem)
        # jinja2.meta folds constant expressions in place as it goes, so what follows sees
        # credentials["pass" ~ "word"] as credentials["password"].
        names = _read_names(tree)
        credential_refs = _credential_refs(tree)
        constant = _constant(tree)
        tree = _Guard().visit(tree)
        tree.set_environment(ENV)
        code = ENV.compile(tree, filename=FILENAME)
        template = ENV.template_class.from_code(ENV, code, ENV.make_globals(None), None)
    except TemplateSyntaxError as error:
        # Compile-time messages quote template source only: there are no values yet.
        return _Failure(error.lineno, error.message or "invalid template syntax")
    except RecursionError:
        return _Failure(None, "the template is nested too deeply")
    except Exception as error:  # no values exist at compile time: its class is safe to name
        return _Failure(None, f"the template does not compile ({type(error).__name__})")
    return Compiled(template, names, credential_refs, constant)


def _refused_construct(tree: nodes.Template) -> tuple[int, str] | None:
    for node in tree.find_all(nodes.Stmt):
        if isinstance(node, nodes.Scope):
            continue  # {% autoescape %}'s wrapper, without a line: its modifier follows
        if not isinstance(node, _ALLOWED_STATEMENTS):
            tag = _STATEMENT_TAGS.get(type(node), type(node).__name__)
            return node.lineno, f"{{% {tag} %}} is not allowed in a Secret template"
        if isinstance(node, nodes.For) and node.recursive:
            return node.lineno, "recursive loops are not allowed in a Secret template"
    for name in tree.find_all(nodes.Name):
        # Jinja binds self to the template itself and never reports it as undeclared.
        if name.name == "self":
            return name.lineno, "'self' is undefined"
    for call in tree.find_all((nodes.Filter, nodes.Test)):
        known = ENV.filters if isinstance(call, nodes.Filter) else ENV.tests
        if call.name not in known or call.name in INTERNAL_FILTERS:
            kind = "filter" if isinstance(call, nodes.Filter) else "test"
            return call.lineno, f"no {kind} named {call.name!r}"
    return None


def _read_names(tree: nodes.Template) -> dict[str, int]:
    undeclared = meta.find_undeclared_variables(tree)
    lines: dict[str, int] = {}
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name in undeclared:
            lines[name.name] = min(lines.get(name.name, name.lineno), name.lineno)
    return dict(sorted(lines.items(), key=lambda item: (item[1], item[0])))


def _credential_refs(tree: nodes.Template) -> dict[str, int]:
    # A template that rebinds the name makes it something else: nothing to check then.
    if any(n.name == "credentials" and n.ctx != "load" for n in tree.find_all(nodes.Name)):
        return {}
    refs: dict[str, int] = {}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        key: object = None
        if isinstance(node, nodes.Getattr):
            target, key = node.node, node.attr
        elif isinstance(node, nodes.Getitem):
            target = node.node
            if isinstance(node.arg, nodes.Const):
                key = node.arg.value
        if not (isinstance(target, nodes.Name) and target.name == "credentials"):
            continue
        # Method names (credentials.get) are not keys.
        if isinstance(key, str) and not hasattr(dict, key):
            refs.setdefault(key, node.lineno)
    return refs


def _constant(tree: nodes.Template) -> str | None:
    parts: list[str] = []
    for statement in tree.body:
        if not isinstance(statement, nodes.Output):
            return None
        for child in statement.nodes:
            if not isinstance(child, nodes.TemplateData):
                return None
            parts.append(child.data)
    return "".join(parts)


class _Guard(NodeTransformer):
    """Routes the constructs the sandbox cannot intercept through bounded filters."""

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _filter_call(nodes.List(node.nodes, lineno=node.lineno), CONCAT_FILTER)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        # What each item runs: the body and the loop's filter (``for x in y if ...``), not
        # the else block, which runs once.
        per_item = [*node.body, *([node.test] if node.test is not None else [])]
        size = sum(1 + sum(1 for _ in part.find_all(nodes.Node)) for part in per_item)
        node.iter = _filter_call(node.iter, ITERATE_FILTER, nodes.Const(max(size, 1)))
        return node

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        # Python compares in C, out of sight of every hook: each operand is charged as read.
        # Chained comparisons keep their short circuit (the filter sits on each operand).
        self.generic_visit(node)
        node.expr = _filter_call(node.expr, READ_FILTER)
        for operand in node.ops:
            operand.expr = _filter_call(operand.expr, READ_FILTER)
        return node


def _filter_call(node: nodes.Node, name: str, *args: nodes.Expr) -> nodes.Filter:
    return nodes.Filter(node, name, list(args), [], None, None, lineno=node.lineno)
