"""The package's layering: what each part may import (static, from the source), what each
stage can load (its static import closure) against what `dvc.yaml` lists, and what the data
stages load (in a fresh interpreter)."""

import ast
import json
import re
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest
import yaml
from helpers.imports import closure, module_file, module_name

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
    return sorted((PACKAGE / part).rglob("*.py"))


# The catalogues of the extension axes: plain data the schema reads, importing nothing of ours.
CATALOGUES = ("deeplab.core.choices",)


@pytest.mark.parametrize("part, allowed, forbidden", [
    # the network imports nothing else of ours; its model file format and device choice use core
    ("model", ("deeplab.model", "deeplab.core", "deeplab.data.classes"), ()),
    ("data", (), ("deeplab.engine", "deeplab.serving", "deeplab.evaluation", "deeplab.model",
                  "deeplab.prepare", "deeplab.report", "deeplab.tracking", "deeplab.stages")),
    ("prepare", (), ("deeplab.engine", "deeplab.serving", "deeplab.evaluation", "deeplab.model.",
                     "deeplab.report", "deeplab.tracking", "deeplab.stages")),
    ("engine", (), ("deeplab.serving", "deeplab.report", "deeplab.prepare", "deeplab.stages",
                    "deeplab.serving.windows")),
    ("evaluation", (), ("deeplab.engine", "deeplab.serving", "deeplab.report", "deeplab.prepare",
                        "deeplab.tracking", "deeplab.stages")),
    ("tracking", (), ("deeplab.engine", "deeplab.serving", "deeplab.report", "deeplab.prepare",
                      "deeplab.stages")),
    # report: the evaluate stage, which also measures the deployed formats (serving's runtimes)
    ("report", (), ("deeplab.engine", "deeplab.prepare", "deeplab.stages")),
    ("serving", (), ("deeplab.engine", "deeplab.prepare", "deeplab.report", "deeplab.stages")),
    # core: imports only itself and the catalogues
    ("core", ("deeplab.core", *CATALOGUES), ()),
    ("choices", ("deeplab.core.choices",), ()),  # plain data that imports nothing else of ours
])
def test_layering(part, allowed, forbidden):
    for path in modules_of(part):
        for name in imported_modules(path):
            where = f"{path.relative_to(REPO)} imports {name}"
            if name.startswith(CATALOGUES):
                continue  # plain data: the one place each axis's choices are defined
            assert not allowed or name.startswith(allowed), where
            assert not name.startswith(forbidden), where


def test_every_module_lives_in_a_layer():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules at the package root: {loose}"


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
    assert not {m for m in loaded if m.startswith("deeplab.model.")}


def _dvc_stages() -> dict[str, dict]:
    """Each stage of dvc.yaml as written (a `foreach` stage: its `do`)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in stages.items()}


def _script(spec: dict) -> Path:
    found = re.search(r"pipeline/(\w+)\.py", spec["cmd"])
    assert found, f"{spec['cmd']}: runs no pipeline/ script"
    return REPO / "pipeline" / f"{found.group(1)}.py"


def stage_closure(spec: dict) -> set[Path]:
    """What a stage can load: its script's import closure, and the code it ships (`SHIPS`)."""
    script = _script(spec)
    module = import_module(f"deeplab.stages.{script.stem}")
    return closure(script, *(module_file(m) for m in getattr(module, "SHIPS", ())))


@pytest.mark.parametrize("stage", sorted(_dvc_stages()))
def test_each_stage_lists_exactly_the_code_it_can_load(stage):
    """dvc.yaml's code deps of a stage equal its static import closure: nothing it can run is
    missing (an edit to it would not rerun the stage), nothing listed is code it never loads
    (an edit to that would rerun it for nothing). A folder stands for every module in it."""
    spec = _dvc_stages()[stage]
    files = stage_closure(spec) | {_script(spec)}
    listed: set[Path] = set()
    for dep in spec["deps"]:
        if dep.startswith(("src/", "pipeline/")):
            path = REPO / dep
            assert path.exists(), f"{stage}: lists {dep}, which does not exist"
            listed |= set(path.rglob("*.py")) if path.is_dir() else {path}
    rel = lambda paths: sorted(str(p.relative_to(REPO)) for p in paths)  # noqa: E731
    assert not files - listed, f"{stage} can load code dvc.yaml does not list: {rel(files - listed)}"
    assert not listed - files, f"{stage} lists code it never loads: {rel(listed - files)}"


TRAINING = ("pretrain", "finetune", "variant")


def test_no_training_stage_loads_serving_windows_or_data_preparation():
    for stage in TRAINING:
        loaded = {module_name(p) for p in stage_closure(_dvc_stages()[stage])}
        assert "deeplab.engine.loop" in loaded  # the check sees what the stage imports
        code = {m for m in loaded if not m.startswith(CATALOGUES)}
        bad = {m for m in code if m.startswith(("deeplab.serving", "deeplab.report",
                                                "deeplab.prepare", "deeplab.serving.windows"))}
        assert not bad, f"{stage} can load {sorted(bad)}"
