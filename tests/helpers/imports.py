"""The `deeplab` source files a script can load, read statically from the source: every import
at any depth (inside functions too: a lazy import is code a stage may run), each module's
parent packages, the names a package hands out lazily (`_LAZY`) and the modules a registry
imports by name (`import_module` of `__package__`: its whole package)."""

import ast
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


def module_file(name: str) -> Path | None:
    """The source file of module `name` (a package: its `__init__.py`), None if not ours."""
    base = SRC.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


@lru_cache(maxsize=None)
def _lazy_names(path: Path) -> dict[str, str]:
    """A package's `_LAZY = {name: ".module"}`: what `from package import name` loads."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_LAZY" for t in node.targets):
            return {k.value: v.value for k, v in zip(node.value.keys, node.value.values)}
    return {}


@lru_cache(maxsize=None)
def direct_imports(path: Path) -> frozenset[str]:
    """The `deeplab` modules `path` imports, as absolute names."""
    name = module_name(path) if path.is_relative_to(SRC) else ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            out.add(target)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if module_file(sub):
                    out.add(sub)  # `from . import synthetic`
                init = module_file(target)
                if init is not None and init.name == "__init__.py":
                    lazy = _lazy_names(init).get(alias.name)
                    if lazy:
                        out.add(target + lazy if lazy.startswith(".") else lazy)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) \
                == "import_module" and any(isinstance(n, ast.Name) and n.id == "__package__"
                                           for n in ast.walk(node)):
            folder = path.parent
            out |= {module_name(p) for p in folder.glob("*.py")}
    return frozenset(m for m in out if m == "deeplab" or m.startswith("deeplab."))


def closure(*starts: Path) -> set[Path]:
    """Every `deeplab` source file reachable from `starts` (scripts or modules), with the
    `__init__.py` of every package on the way."""
    seen: set[Path] = set()
    todo = list(starts)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in direct_imports(path):
            parts = name.split(".")
            for k in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:k]))
                if found is not None and found not in seen:
                    todo.append(found)
    return {p for p in seen if p.is_relative_to(SRC)}
