"""Email templates: the defaults shipped in app/emails/templates, a program's overrides, and the
sandbox they are rendered in.

Templates are Jinja2 in a sandbox that reaches nothing but the given context (plain dicts of
strings: no attribute or method of any object, a short list of filters, no function calls).
They may print variables and use `if`; loops, `set`, macros, includes and arithmetic beyond
`+`/`-` are refused when a template is saved, so that rendering time and size are bounded by
the template's own size. HTML is autoescaped; subjects and plain text are not (they are not
markup). Every email gets the unsubscribe footer outside the template, so an override cannot
drop it.
"""

import logging
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any

from jinja2 import Environment, StrictUndefined, Template, TemplateError, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from app.core.errors import AppError
from app.emails.models import EmailKind

logger = logging.getLogger("app.emails")

TEMPLATES = Path(__file__).resolve().parent / "templates"
PARTS = ("subject", "text", "html")
MAX_CHARS = {"subject": 500, "text": 20_000, "html": 20_000}
MAX_SUBJECT = 250

# Filters whose output is bounded by their input: nothing that pads, repeats or reaches objects.
FILTERS = frozenset(
    {
        "abs",
        "capitalize",
        "d",
        "default",
        "e",
        "escape",
        "first",
        "int",
        "last",
        "length",
        "lower",
        "round",
        "string",
        "striptags",
        "title",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "wordcount",
    }
)
ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Const,
    nodes.Name,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Filter,
    nodes.Test,
    nodes.If,
    nodes.CondExpr,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Concat,
    nodes.Add,
    nodes.Sub,
    nodes.Neg,
    nodes.Pos,
    nodes.Keyword,
    nodes.Tuple,
    nodes.List,
)
TAG_NAMES = {
    nodes.For: "for loops",
    nodes.Assign: "set",
    nodes.AssignBlock: "set",
    nodes.Macro: "macros",
    nodes.CallBlock: "call blocks",
    nodes.Call: "function calls",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "import",
    nodes.Extends: "extends",
    nodes.Block: "blocks",
    nodes.FilterBlock: "filter blocks",
    nodes.With: "with",
    nodes.Mul: "*",
    nodes.Pow: "**",
    nodes.Mod: "%",
    nodes.Div: "/",
    nodes.FloorDiv: "//",
}


class TemplateInvalid(AppError):
    status, code, title = 422, "template_invalid", "The email template is not valid"


class _Sandbox(ImmutableSandboxedEnvironment):
    """Dict keys only: no attribute and no method of any value is reachable."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return False

    def is_safe_callable(self, obj: Any) -> bool:
        return False


def _none_as_empty(value: Any) -> Any:
    return "" if value is None else value


def _environment(autoescape: bool) -> Environment:
    env = _Sandbox(
        autoescape=autoescape,
        undefined=StrictUndefined,
        finalize=_none_as_empty,
        keep_trailing_newline=True,
        trim_blocks=True,
    )
    env.filters = {name: f for name, f in env.filters.items() if name in FILTERS}
    env.globals.clear()
    return env


TEXT_ENV = _environment(autoescape=False)
HTML_ENV = _environment(autoescape=True)
# The frame around every HTML body: ours, never overridden.
LAYOUT_ENV = Environment(autoescape=True)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


@cache
def default_source(kind: EmailKind, part: str) -> str:
    suffix = {"subject": "subject", "text": "txt", "html": "html"}[part]
    return (TEMPLATES / f"{kind.value}.{suffix}").read_text(encoding="utf-8")


@cache
def _layout() -> Template:
    return LAYOUT_ENV.from_string((TEMPLATES / "layout.html").read_text(encoding="utf-8"))


def _check_nodes(tree: nodes.Node) -> None:
    for node in tree.find_all(nodes.Node):
        if not isinstance(node, ALLOWED_NODES):
            what = TAG_NAMES.get(type(node), type(node).__name__)
            raise TemplateSyntaxError(f"{what} cannot be used in email templates", node.lineno)
        if isinstance(node, nodes.Filter) and node.name not in FILTERS:
            raise TemplateSyntaxError(
                f"the filter {node.name!r} cannot be used; use one of {', '.join(sorted(FILTERS))}",
                node.lineno,
            )
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise TemplateSyntaxError(f"no variable named {node.attr!r}", node.lineno)
        if isinstance(node, nodes.Getitem) and not (
            isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str | int)
            and not str(node.arg.value).startswith("_")
        ):
            raise TemplateSyntaxError("only fixed names may be looked up in []", node.lineno)


@lru_cache(maxsize=512)
def compile_part(part: str, source: str) -> Template:
    """The compiled template, or TemplateSyntaxError (with its line) if it may not be used."""
    env = HTML_ENV if part == "html" else TEXT_ENV
    tree = env.parse(source)
    _check_nodes(tree)
    return env.from_string(tree)


def _template_line(traceback: TracebackType | None) -> int | None:
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == "<template>":
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def validate(kind: EmailKind, sources: dict[str, str | None]) -> None:
    """Raise TemplateInvalid (422, with the part and line) unless every given part compiles and
    renders with the kind's sample data."""
    errors = []
    context = sample_context(kind)
    for part in PARTS:
        source = sources.get(part)
        if source is None:
            continue
        if len(source) > MAX_CHARS[part]:
            errors.append(_error(part, None, f"at most {MAX_CHARS[part]} characters"))
            continue
        try:
            compile_part(part, source).render(context)
        except TemplateSyntaxError as exc:
            errors.append(_error(part, exc.lineno, exc.message or "syntax error"))
        except TemplateError as exc:  # an unknown variable, an unsafe access
            errors.append(_error(part, _template_line(exc.__traceback__), str(exc)))
        except (RecursionError, ValueError, TypeError, ArithmeticError) as exc:
            errors.append(_error(part, _template_line(exc.__traceback__), type(exc).__name__))
    if errors:
        first = errors[0]
        where = f" (line {first['line']})" if first.get("line") else ""
        raise TemplateInvalid(
            f"The {first['loc'][-1]} template{where}: {first['msg']}", errors=errors
        )


def _error(part: str, line: int | None, message: str) -> dict[str, Any]:
    error: dict[str, Any] = {"loc": ["body", part], "msg": message[:300]}
    if line is not None:
        error["line"] = line
    return error


def _render_part(
    kind: EmailKind, part: str, source: str, default: str, context: dict[str, Any]
) -> str:
    try:
        return compile_part(part, source).render(context)
    except Exception:
        if source == default:
            raise
        # A saved override was checked against sample data; real data that still breaks it
        # gets the default rather than no email.
        logger.warning("the %s template of %s emails failed; sent the default", part, kind)
        return compile_part(part, default).render(context)


def render(
    kind: EmailKind,
    context: dict[str, Any],
    overrides: dict[str, str | None] | None = None,
    *,
    program_name: str,
    unsubscribe_url: str,
) -> Rendered:
    """Subject, plain text and HTML of one email, with the unsubscribe footer."""
    overrides = overrides or {}
    parts = {}
    for part in PARTS:
        default = default_source(kind, part)
        parts[part] = _render_part(kind, part, overrides.get(part) or default, default, context)
    subject = re.sub(r"\s+", " ", parts["subject"]).strip()[:MAX_SUBJECT] or program_name
    text = (
        parts["text"].rstrip()
        + f"\n\n-- \nYou get this email because you take part in {program_name}.\n"
        + f"Unsubscribe: {unsubscribe_url}\n"
    )
    html = _layout().render(
        subject=subject,
        body=Markup(parts["html"]),
        program_name=program_name,
        unsubscribe_url=unsubscribe_url,
    )
    return Rendered(subject=subject, text=text, html=html)


SAMPLE_LINK = "https://referrals.example.com/r/ALICE10"
SAMPLE_QR = "https://referrals.example.com/v1/codes/ALICE10/qr.png?placement=email&size=240"


def sample_context(kind: EmailKind) -> dict[str, Any]:
    """What a preview renders with: the variables the kind's emails get, with made-up values."""
    context: dict[str, Any] = {
        "program": {"name": "Spring referrals", "referee_offer": "10% off your first order"},
        "recipient": {"name": "Alice"},
        "code": "ALICE10",
        "link": SAMPLE_LINK,
        "qr_url": SAMPLE_QR,
        "unsubscribe_url": "https://referrals.example.com/unsubscribe?token=sample",
    }
    if kind in (
        EmailKind.REWARD_EARNED,
        EmailKind.REWARD_APPROVED,
        EmailKind.REWARD_PAID,
        EmailKind.REWARD_FULFILLED,
    ):
        context["reward"] = {
            "amount": "$10.00",
            "value": "10.00",
            "unit": "USD",
            "status": "pending" if kind == EmailKind.REWARD_EARNED else "approved",
            "available_on": "2026-05-01",
            "payout_reference": "PAY-1042" if kind == EmailKind.REWARD_PAID else None,
        }
    if kind == EmailKind.REWARD_FULFILLED:
        context["reward"]["status"] = "paid"
        context["reward"]["payout_reference"] = "gid://shopify/DiscountCodeNode/1042"
        context["fulfilment"] = {
            "method": "coupon",
            "provider": "shopify",
            "code": "REFK7QW2M9XHD4TP",
            "reference": "gid://shopify/DiscountCodeNode/1042",
        }
    if kind == EmailKind.REMINDER:
        context["days"] = 30
    return context
