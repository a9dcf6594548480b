"""Packaging invariants: the wheels workflow, the cibuildwheel matrix and the typing stub.

These read files of the source checkout (workflow, pyproject.toml, the stub), so they
skip where the tests run from a copy of tests/ without the checkout around it (the
cibuildwheel and sdist test runs).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_TOP = ROOT / "wheels.yml"
WORKFLOW_GITHUB = ROOT / ".github" / "workflows" / "wheels.yml"
STUB = ROOT / "src" / "volleyio" / "_speedups" / "_compiled.pyi"
PURE = ROOT / "src" / "volleyio" / "_speedups" / "_pure.py"

if not (ROOT / "setup.py").is_file():
    pytest.skip("needs the source checkout around tests/", allow_module_level=True)

if sys.version_info >= (3, 11):
    import tomllib
else:
    tomllib = pytest.importorskip("tomli")

yaml = pytest.importorskip("yaml")

PYTHONS = ("cp310", "cp311", "cp312", "cp313", "cp314", "cp314t")
EXPORTS = (
    "mask", "mask_inplace", "validate_utf8", "Utf8Validator", "parse_frames", "encode_frame", "encode_message",
)


def _workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW_GITHUB.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _pyproject() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


# -- the workflow -----------------------------------------------------------------


def test_workflow_copies_are_identical_files() -> None:
    # GitHub Actions does not read a symlinked workflow file: both must be real files.
    assert not WORKFLOW_GITHUB.is_symlink()
    assert not WORKFLOW_TOP.is_symlink()
    assert WORKFLOW_TOP.read_bytes() == WORKFLOW_GITHUB.read_bytes(), (
        "wheels.yml and .github/workflows/wheels.yml differ: copy one over the other"
    )


def test_workflow_jobs() -> None:
    jobs = _workflow()["jobs"]
    assert set(jobs) == {"sdist", "sdist-pure", "wheels", "publish"}
    assert jobs["sdist-pure"]["needs"] == "sdist"
    assert set(jobs["publish"]["needs"]) == {"sdist", "sdist-pure", "wheels"}


def test_workflow_wheels_on_native_runners() -> None:
    wheels = _workflow()["jobs"]["wheels"]
    matrix = {(row["os"], row["archs"]) for row in wheels["strategy"]["matrix"]["include"]}
    archs = {archs for _, archs in matrix}
    assert archs == {"x86_64", "aarch64", "arm64", "AMD64", "ARM64"}
    runners = {os for os, _ in matrix}
    assert {"ubuntu-24.04-arm", "windows-11-arm"} <= runners
    assert len(matrix) == 6
    (step,) = [s for s in wheels["steps"] if str(s.get("uses", "")).startswith("pypa/cibuildwheel@")]
    version = step["uses"].split("@", 1)[1]
    assert version.startswith("v") and version.count(".") == 2, "pin cibuildwheel to a release"
    assert step["env"]["CIBW_ARCHS"] == "${{ matrix.archs }}"


def test_workflow_sdist_is_tested_without_a_compiler() -> None:
    job = _workflow()["jobs"]["sdist-pure"]
    install = next(s for s in job["steps"] if s.get("name", "").startswith("Install"))
    assert install["env"]["CC"] == "/bin/false"
    text = "\n".join(str(s.get("run", "")) for s in job["steps"])
    assert 'IMPLEMENTATION != "python"' in text
    assert "pytest" in text


def test_workflow_publish_uses_trusted_publishing_on_tags_only() -> None:
    workflow = _workflow()
    assert workflow["permissions"] == {"contents": "read"}
    publish = workflow["jobs"]["publish"]
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"] == "pypi"
    assert "refs/tags/" in publish["if"]
    (step,) = [s for s in publish["steps"] if str(s.get("uses", "")).startswith("pypa/gh-action-pypi-publish@")]
    assert "password" not in step.get("with", {}), "trusted publishing needs no token"


# -- cibuildwheel configuration ----------------------------------------------------


def test_cibuildwheel_matrix() -> None:
    cibw = _pyproject()["tool"]["cibuildwheel"]
    assert cibw["build"].split() == [f"{py}-*" for py in PYTHONS]
    assert cibw["environment"] == {"VOLLEYIO_REQUIRE_EXTENSIONS": "1"}
    assert cibw["test-environment"] == {"VOLLEYIO_EXPECT_COMPILED": "1"}
    assert cibw["test-extras"] == ["test"]
    assert "tests" in cibw["test-sources"]
    assert set(cibw["linux"]["archs"]) == {"x86_64", "aarch64"}
    assert set(cibw["macos"]["archs"]) == {"x86_64", "arm64"}
    assert set(cibw["windows"]["archs"]) == {"AMD64", "ARM64"}


def test_metadata_classifiers_and_urls_match_the_build_matrix() -> None:
    project = _pyproject()["project"]
    classifiers = set(project["classifiers"])
    versions = sorted({py[2:].rstrip("t") for py in PYTHONS})  # "310", ..., "314"
    for v in versions:
        assert f"Programming Language :: Python :: {v[0]}.{v[1:]}" in classifiers
    assert project["requires-python"] == f">={versions[0][0]}.{versions[0][1:]}"
    for system in ("POSIX :: Linux", "MacOS", "Microsoft :: Windows"):  # the wheel platforms
        assert f"Operating System :: {system}" in classifiers
    assert {"Documentation", "Source", "Changelog"} <= set(project["urls"])


def test_free_threaded_wheel_is_tested_for_the_gil() -> None:
    # The cp314t job runs tests/test_free_threading.py with VOLLEYIO_EXPECT_FREE_THREADING=1:
    # there it cannot skip, and it fails if the compiled module brought the GIL back.
    cibw = _pyproject()["tool"]["cibuildwheel"]
    (override,) = [o for o in cibw.get("overrides", []) if o["select"] == "cp314t-*"]
    assert override["test-environment"] == {"VOLLEYIO_EXPECT_COMPILED": "1", "VOLLEYIO_EXPECT_FREE_THREADING": "1"}
    assert "tests" in cibw["test-command"] and "not interop" in cibw["test-command"]
    assert (ROOT / "tests" / "test_free_threading.py").exists()
    pyx = (ROOT / "ext" / "_compiled.pyx").read_text(encoding="utf-8")
    assert "# cython: freethreading_compatible=True" in pyx.splitlines()[:5]


def test_manifest_ships_extension_sources() -> None:
    lines = (ROOT / "MANIFEST.in").read_text(encoding="utf-8").splitlines()
    assert "graft ext" in lines
    assert "graft tests" in lines


# -- the stub of the compiled module mirrors the pure twin --------------------------


class _UnionToPipe(ast.NodeTransformer):
    """``Union[a, b]`` -> ``a | b`` so that both spellings compare equal."""

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.value, ast.Name) and node.value.id == "Union":
            members = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            result = members[0]
            for member in members[1:]:
                result = ast.BinOp(left=result, op=ast.BitOr(), right=member)
            return result
        return node


def _text(node: ast.AST | None) -> str | None:
    if node is None:
        return None
    return ast.unparse(_UnionToPipe().visit(node))


def _signature(fn: ast.FunctionDef) -> tuple[Any, ...]:
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + [_text(d) for d in args.defaults]
    params = [(a.arg, _text(a.annotation), d) for a, d in zip(positional, defaults)]
    kwonly = [(a.arg, _text(a.annotation), _text(d)) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    decorators = [_text(d) for d in fn.decorator_list]
    return (params, kwonly, args.vararg is not None, args.kwarg is not None, _text(fn.returns), decorators)


def _api(path: Path) -> dict[str, Any]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    api: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in EXPORTS:
            api[node.name] = _signature(node)
        elif isinstance(node, ast.ClassDef) and node.name in EXPORTS:
            api[node.name] = {
                item.name: _signature(item)
                for item in node.body
                if isinstance(item, ast.FunctionDef) and (not item.name.startswith("_") or item.name == "__init__")
            }
    return api


def test_compiled_stub_mirrors_pure_twin() -> None:
    pure = _api(PURE)
    assert set(pure) == set(EXPORTS)
    assert _api(STUB) == pure
