"""``.. benchmarks-list::``: the scripts in benchmarks/, each with its docstring's first line.

The performance page lists what can be measured from what is actually in the
repository, so it never names a benchmark that does not exist.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _summary(path: Path) -> str:
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    except (OSError, SyntaxError, UnicodeDecodeError):
        doc = None
    return doc.strip().splitlines()[0] if doc else "(no description)"


class BenchmarksList(SphinxDirective):
    def run(self) -> list[nodes.Node]:
        # Single-file benchmarks, and suites in a folder of their own (their run.py).
        scripts = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))
        scripts += sorted(BENCHMARKS.glob("*/run.py"))
        for script in scripts:
            self.env.note_dependency(str(script))
        if not scripts:
            para = nodes.paragraph(text="There are no benchmark scripts in benchmarks/ yet.")
            return [para]
        items = nodes.bullet_list()
        for script in scripts:
            para = nodes.paragraph()
            para += nodes.literal(text=f"benchmarks/{script.relative_to(BENCHMARKS).as_posix()}")
            para += nodes.Text(f" — {_summary(script)}")
            items += nodes.list_item("", para)
        return [items]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("benchmarks-list", BenchmarksList)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
