"""The shape the code keeps: short functions, modules of one concern, no reaching into other modules' privates."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = sorted((ROOT / "distill").rglob("*.py"))
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400


def _functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_function_in_the_package_is_longer_than_80_lines():
    long = [f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} ({fn.end_lineno - fn.lineno + 1} lines)"
            for path in PACKAGE for fn in _functions(ast.parse(path.read_text()))
            if fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long


def test_no_module_in_the_package_is_longer_than_400_lines():
    long = [f"{p.relative_to(ROOT)} ({n} lines)" for p in PACKAGE
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long


def test_nothing_imports_an_underscore_name_from_another_module():
    sources = PACKAGE + sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    found = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "distill":
                found += [f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}"
                          for a in node.names if a.name.startswith("_")]
    assert not found


def test_benchmarks_use_the_installed_package_not_a_path_hack():
    hacks = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "benchmarks").glob("*.py")) + sorted(
        (ROOT / "tests").rglob("*.py")) if "sys.path.insert" in p.read_text() and p.name != "test_code_shape.py"]
    assert not hacks
