"""The package's layering: what each part may import (static, from the source) and what each
stage script loads (in a fresh interpreter)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
PACKAGE = REPO / "src" / "deeplab"


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the `deeplab` modules a source file imports (at any depth)."""
    package = ".".join(path.relative_to(PACKAGE.parent).parts[:-1])  # the file's own package
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            name = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}  # `from . import synthetic`
    return {m for m in out if m == "deeplab" or m.startswith("deeplab.")}


def modules_of(part: str) -> list[Path]:
    return sorted((PACKAGE / part).rglob("*.py")) if (PACKAGE / part).is_dir() else [PACKAGE / f"{part}.py"]


@pytest.mark.parametrize("part, allowed, forbidden", [
    ("model", ("deeplab.model",), ()),  # the network imports nothing else of ours
    ("data", (), ("deeplab.engine", "deeplab.serving", "deeplab.evaluation", "deeplab.model",
                  "deeplab.prepare", "deeplab.report")),
    ("prepare", (), ("deeplab.engine", "deeplab.serving", "deeplab.evaluation", "deeplab.model.",
                     "deeplab.report")),
    ("engine", (), ("deeplab.serving", "deeplab.report", "deeplab.prepare")),
    ("evaluation", (), ("deeplab.engine", "deeplab.serving", "deeplab.report", "deeplab.prepare")),
    # report: the evaluate stage, which also measures the deployed formats (serving's runtimes)
    ("report", (), ("deeplab.engine", "deeplab.prepare")),
    # core: imports only itself (and the network's choices, plain data)
    ("core", ("deeplab.core",), ()),
])
def test_layering(part, allowed, forbidden):
    for path in modules_of(part):
        for name in imported_modules(path):
            where = f"{path.relative_to(REPO)} imports {name}"
            if part == "core" and (name == "deeplab.model" or name.startswith("deeplab.model.choices")):
                continue  # plain data, no torch: the one place the choices are defined
            assert not allowed or name.startswith(allowed), where
            assert not name.startswith(forbidden), where


LOADED = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("stage", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted(m for m in sys.modules if m == "torch" or m.startswith("deeplab"))))
"""


def loaded_by(script: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", LOADED, str(REPO / "pipeline" / script)],
                         capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.slow
@pytest.mark.parametrize("script", ["fetch.py", "preprocess.py"])
def test_data_stages_load_neither_torch_nor_the_network(script):
    loaded = loaded_by(script)
    assert "torch" not in loaded
    assert not {m for m in loaded if m.startswith("deeplab.model.")} - {"deeplab.model.choices"}


@pytest.mark.slow
@pytest.mark.parametrize("script", ["pretrain.py", "finetune.py", "variant.py"])
def test_training_stages_load_no_serving_and_no_report(script):
    loaded = loaded_by(script)
    assert "deeplab.engine.loop" in loaded  # the check sees what the stage imports
    assert not {m for m in loaded if m.startswith("deeplab.serving")}
    assert not {m for m in loaded if m.startswith(("deeplab.report", "deeplab.prepare"))}
