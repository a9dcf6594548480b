"""The API reference, generated from ``__all__``: every public name gets an entry.

Public modules are ``volleyio`` and each of its direct subpackages or modules whose name
does not start with ``_`` and which defines ``__all__`` (so a new package such as
``volleyio.asgi`` is picked up without editing anything here); ``api_reference_extra``
in conf.py adds deeper ones. At ``builder-inited`` this writes ``reference/<module>.rst``
(git-ignored) with, for each name of the module's ``__all__``:

* an autodoc entry (``autoclass``/``autoexception`` with members, ``autofunction``,
  ``autodata``) when no other page documents that object yet;
* a cross-reference to the entry of a page that already documents it (scanned from the
  ``.. auto*::``/``.. py:*::`` directives of the .rst sources, following
  ``.. currentmodule::``), under the same or another public name.

A ``missing-reference`` handler then resolves what signatures name by their defining
module (``volleyio.trio._http.Request``) to the public entry of the same object
(``volleyio.trio.Request``), renders TypeVars and names of other libraries as plain
text once they are found to exist (the build is offline: no intersphinx), and leaves
every other unresolved reference to Sphinx, so ``-n -W`` fails on a dead one.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import typing
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

ROOT_PACKAGE = "volleyio"
OUT_DIR = "reference"

_DIRECTIVE = re.compile(
    r"^\s*\.\.\s+(?:auto|py:)?(?P<kind>module|class|exception|function|data|attribute|method|property)"
    r"::\s+(?P<name>[\w.]+)",
    re.M,
)
_CURRENT = re.compile(r"^\s*\.\.\s+(?:py:)?(?:currentmodule|module)::\s+(?P<name>[\w.]+)", re.M)


def public_modules(extra: list[str] | None = None) -> list[str]:
    """``volleyio`` and its public direct children that define ``__all__`` (plus ``extra``)."""
    root = importlib.import_module(ROOT_PACKAGE)
    found = [ROOT_PACKAGE]
    for info in pkgutil.iter_modules(root.__path__):
        if info.name.startswith("_"):
            continue
        name = f"{ROOT_PACKAGE}.{info.name}"
        module = importlib.import_module(name)
        if hasattr(module, "__all__"):
            found.append(name)
    for name in extra or []:
        if name not in found:
            found.append(name)
    return found


def _import_path(path: str) -> Any:
    """The object at dotted ``path`` (module, then attributes), or raise LookupError."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            try:
                obj = getattr(obj, attr)
            except AttributeError:
                raise LookupError(path) from None
        return obj
    raise LookupError(path)


def _identity_key(obj: Any) -> int | None:
    """Classes and functions are recognised by identity; constants only by name."""
    return id(obj) if inspect.isclass(obj) or inspect.isroutine(obj) else None


def documented_elsewhere(srcdir: Path) -> dict[str, str]:
    """Full names documented by the hand-written pages: ``{full name: kind}``."""
    found: dict[str, str] = {}
    for path in sorted(srcdir.rglob("*.rst")):
        rel = path.relative_to(srcdir)
        if rel.parts[0] in (OUT_DIR, "_build"):
            continue
        current = ""
        text = path.read_text(encoding="utf-8")
        events = sorted(
            [(m.start(), "cur", m) for m in _CURRENT.finditer(text)]
            + [(m.start(), "doc", m) for m in _DIRECTIVE.finditer(text)],
            key=lambda item: item[0],
        )
        for _, what, match in events:
            name = match.group("name")
            if what == "cur":
                current = name
                continue
            kind = match.group("kind")
            if kind == "module":
                current = name
                found[name] = kind
                continue
            full = name if name.startswith(ROOT_PACKAGE + ".") or not current else f"{current}.{name}"
            found[full] = kind
    return found


def _role(obj: Any) -> str:
    if inspect.isclass(obj):
        return "exc" if issubclass(obj, BaseException) else "class"
    if inspect.isroutine(obj):
        return "func"
    return "data"


def _entry(module: str, name: str, obj: Any) -> list[str]:
    full = f"{module}.{name}"
    if inspect.isclass(obj):
        directive = "autoexception" if issubclass(obj, BaseException) else "autoclass"
        # Bases are shown for exceptions (the hierarchy is API); a class's helper base
        # (a private mixin) is not.
        extra = ["   :show-inheritance:"] if directive == "autoexception" else []
        return [f".. {directive}:: {full}", "   :members:", "   :undoc-members:", *extra, ""]
    if inspect.isroutine(obj):
        return [f".. autofunction:: {full}", ""]
    return [f".. autodata:: {full}", ""]


def _alias(module: str, name: str, obj: Any, target: str) -> list[str]:
    directive = {"class": "py:class", "exc": "py:exception", "func": "py:function"}[_role(obj)]
    role = _role(obj)
    return [
        f".. {directive}:: {name}",  # inside the page's ``py:module:: {module}``
        "   :no-contents-entry:",
        "",
        f"   The same object as :{'func' if role == 'func' else role}:`{target}`.",
        "",
    ]


def generate(app: Sphinx) -> None:
    srcdir = Path(app.srcdir)
    out = srcdir / OUT_DIR
    out.mkdir(exist_ok=True)
    modules = public_modules(list(app.config.api_reference_extra))
    documented = documented_elsewhere(srcdir)
    # Identity of every documented class/function -> the full name of its entry.
    entry_of: dict[int, str] = {}
    for full in documented:
        try:
            key = _identity_key(_import_path(full))
        except LookupError:
            continue
        if key is not None:
            entry_of.setdefault(key, full)

    public: dict[int, str] = {}
    pages: list[str] = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        exported = [n for n in getattr(module, "__all__", []) if not n.startswith("__")]
        lines = [module_name, "=" * len(module_name), "", f".. py:module:: {module_name}", ""]
        summary = (inspect.getdoc(module) or "").strip().splitlines()
        if summary:
            lines += [summary[0], ""]
        lines += ["Exported names (``__all__``):", ""]
        body: list[str] = []
        for name in exported:
            obj = getattr(module, name)
            full = f"{module_name}.{name}"
            role = _role(obj)
            key = _identity_key(obj)
            target = documented.get(full) and full
            if target is None and key is not None:
                target = entry_of.get(key)
            if target is None:
                body += _entry(module_name, name, obj)
                target = full
                if key is not None:
                    entry_of[key] = full
            elif target != full:
                body += _alias(module_name, name, obj, target)
            lines.append(f"* :{role}:`{name} <{target}>`")
            if key is not None:
                public.setdefault(key, target)
        lines += ["", "Entries not documented on another page:", ""] + body
        page = module_name
        pages.append(page)
        _write(out / f"{page}.rst", "\n".join(lines) + "\n")
    index = [
        "API reference",
        "=============",
        "",
        "Every name exported by volleyio's public modules (their ``__all__``), with its",
        "types. Generated at build time by ``docs/_ext/api_reference.py``; the pages of",
        "the guide link here.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
    ] + [f"   {p}" for p in pages]
    _write(out / "index.rst", "\n".join(index) + "\n")
    app.env.volleyio_public = public  # type: ignore[attr-defined]


def _write(path: Path, text: str) -> None:
    # Rewrite only on change, so Sphinx's incremental build does not re-read every page.
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _text(contnode: nodes.Node) -> nodes.Node:
    return nodes.literal(contnode.astext(), contnode.astext())


def _resolve_object(candidate: str) -> Any:
    try:
        return _import_path(candidate)
    except LookupError:
        pass
    root, _, rest = candidate.partition(".")
    if root.startswith("_") and rest:  # ``import ssl as _ssl`` in a signature
        return _import_path(f"{root[1:]}.{rest}")
    raise LookupError(candidate)


def _public_name(public: dict[int, str], path: str, obj: Any) -> str | None:
    """The public entry of ``obj`` (found at ``path``), or of its member through its class."""
    key = _identity_key(obj)
    if key is not None and key in public:
        return public[key]
    owner_path, _, attr = path.rpartition(".")
    try:
        owner = _import_path(owner_path)
    except LookupError:
        return None
    if inspect.isclass(owner) and id(owner) in public:
        return f"{public[id(owner)]}.{attr}"
    return None


def resolve(app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Node) -> nodes.Node | None:
    if node.get("refdomain") != "py":
        return None
    target: str = node["reftarget"]
    public: dict[int, str] = getattr(env, "volleyio_public", {})
    candidates = [target]
    module = node.get("py:module")
    cls = node.get("py:class")
    if module and not target.startswith(ROOT_PACKAGE + "."):
        candidates.insert(0, f"{module}.{target}")
        if cls:
            candidates.insert(0, f"{module}.{cls}.{target}")
    domain = env.get_domain("py")
    for candidate in candidates:
        try:
            obj = _resolve_object(candidate)
        except (LookupError, ImportError):
            continue
        if isinstance(obj, typing.TypeVar):
            return _text(contnode)
        if candidate.split(".")[0] != ROOT_PACKAGE:
            return _text(contnode)  # another library's name that exists: no intersphinx
        new = _public_name(public, candidate, obj)
        if new is None:
            if candidate.rpartition(".")[2].startswith("_"):
                return _text(contnode)  # a private helper class named in a signature
            continue
        for reftype in (node["reftype"], "obj"):
            result = domain.resolve_xref(env, node["refdoc"], app.builder, reftype, new, node, contnode)
            if result is not None:
                return result
    return None


def _signature(app: Sphinx, what: str, name: str, obj: Any, options: Any, signature: str | None,
               return_annotation: str | None) -> tuple[str | None, str | None] | None:
    """Dataclass signatures: ``= <factory>`` and quoted annotations (``from __future__ import
    annotations``) break Sphinx's signature parser, which then reads the types as text."""
    if not signature:
        return None
    signature = signature.replace("= <factory>", "= ...")
    signature = re.sub(r": '([^']*)'", r": \1", signature)
    return signature, return_annotation


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("autodoc-process-signature", _signature)
    app.add_config_value("api_reference_extra", [], "env")
    app.connect("builder-inited", generate)
    app.connect("missing-reference", resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
