"""The house in numbers, for a checkout of deploykit: units and the import arrows between them (by that
checkout's own ``deploykit/_layers.py``), the SIDEWAYS exceptions, the largest module and function, and
inline integer range checks (an ``if`` testing ``isinstance(…, int)`` with a comparison, then raising).

    .venv/bin/python bench/house_metrics.py                 # this checkout
    git worktree add /tmp/before 446961b && .venv/bin/python bench/house_metrics.py /tmp/before
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_layers(checkout: Path):
    spec = importlib.util.spec_from_file_location("layers_of_checkout", checkout / "deploykit" / "_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imported_modules(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("deploykit"):
        return [node.module]
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.startswith("deploykit")]
    return []


def is_inline_int_check(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = ast.unparse(node.test)
    return (re.search(r"isinstance\([^)]*\bint\b", test) is not None and re.search(r"[<>]", test) is not None
            and any(isinstance(statement, ast.Raise) for statement in node.body))


def measure(checkout: Path) -> dict:
    layers, package = load_layers(checkout), checkout / "deploykit"
    arrows, sizes, functions, inline = set(), {}, [], 0
    for path in sorted(package.rglob("*.py")):
        parts = [p for p in path.relative_to(package).with_suffix("").parts if p != "__init__"]
        name = ".".join(parts) or "__init__"
        text = path.read_text(encoding="utf-8")
        sizes[name] = len(text.splitlines())
        source = layers.unit_of(name)
        for node in ast.walk(ast.parse(text)):
            for module in imported_modules(node):
                try:
                    target = layers.unit_of(".".join(module.split(".")[1:]) or "__init__")
                except KeyError:
                    continue
                if target != source:
                    arrows.add((source, target))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
            inline += is_inline_int_check(node)
    module, lines = max(sizes.items(), key=lambda item: item[1])
    longest = max(functions)
    return {"units": sum(len(layer) for layer in layers.LAYERS), "arrows": len(arrows),
            "sideways": sum(len(v) for v in layers.SIDEWAYS.values()), "modules": len(sizes),
            "lines": sum(sizes.values()), "largest_module": f"{module} ({lines} lines)",
            "largest_function": f"{longest[1]} ({longest[0]} lines)", "inline_int_checks": inline}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkout", nargs="?", type=Path, default=ROOT)
    args = p.parse_args(argv)
    for key, value in measure(args.checkout.resolve()).items():
        print(f"{key:18s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
