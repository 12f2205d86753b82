"""What README, docs/, bench/README.md and params.yaml quote still exists: every repository path,
every `deeplab.*` module or name, every params key path (of every section), every
`docs/x.md "Heading"` pointer; and every number they quote from a committed report equals it."""

import ast
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers.repo import REPO
from pydantic import BaseModel

from deeplab.core.schema import Params

DOCS = [REPO / "README.md", REPO / "bench" / "README.md", REPO / "params.yaml",
        *sorted((REPO / "docs").glob("*.md"))]
TRACKED_TOP = ("src/", "pipeline/", "tests/", "docs/", "bench/", "recipes/", ".githooks/", ".ci/")
OUTPUT_TOP = ("reports/", "models/", "data/", "mlartifacts/")  # written by the pipeline
PATH = re.compile(r"(?<![\w./-])((?:src|pipeline|tests|docs|bench|recipes|\.githooks|\.ci)/"
                  r"[\w./{}*<>-]*[\w/])")
MODULE = re.compile(r"(?<![\w./])(deeplab(?:\.\w+)+)(?!\w)")
FILE_SUFFIXES = ("pt", "pt2", "onnx", "db", "yaml", "json", "csv", "md", "png")  # `deeplab.pt2` is a file name
SECTIONS = ("seed", "data", "preprocess", "model", "train", "runtime", "pretrain", "finetune",
            "evaluate", "rank", "ablations", "deploy", "register", "mlflow", "sweep")
KEY = re.compile(rf"`((?:{'|'.join(SECTIONS)})(?:\.\w+)+)(?!: unknown key)`?")  # not the quoted typo of an error
HEADING = re.compile(r"(docs/\w+\.md) \"([^\"]+)\"")


NOT_KEYS = {"data.hash", "sweep.parent", "sweep.state", "sweep.trial", "sweep.value"}  # run tags
OUTPUT_OPTIONS = ("--out", "--output")  # what follows is written, not read


def quoted(pattern: re.Pattern) -> list[tuple[str, str]]:
    """(document, quoted text) for each match that is not the target of an output option."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in pattern.finditer(text):
            if not text[:m.start()].rstrip().endswith(OUTPUT_OPTIONS):
                out.append((str(doc.relative_to(REPO)), m.group(1)))
    return out


def test_quoted_repository_paths_exist():
    missing = []
    for doc, path in quoted(PATH):
        path = path.rstrip(".")
        if any(c in path for c in "{}*<>"):  # a pattern (`tests/<package>/test_<module>.py`)
            stem = re.split(r"[{}*<>]", path)[0].rsplit("/", 1)[0]
            if not (REPO / stem).exists():
                missing.append(f"{doc}: {path}")
        elif not (REPO / path).exists():
            missing.append(f"{doc}: {path}")
    assert not missing, "quoted paths that do not exist:\n" + "\n".join(missing)


def _resolves(name: str) -> bool:
    parts = name.split(".")
    src = REPO / "src"
    for i in range(len(parts), 0, -1):
        base = src.joinpath(*parts[:i])
        module = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if module.is_file():
            rest = parts[i:]
            if not rest:
                return True
            tree = ast.parse(module.read_text())
            names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            names |= {t.id for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
                      for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                      if isinstance(t, ast.Name)}
            names |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                      for a in n.names}
            return rest[0] in names
    return False


def test_quoted_modules_and_names_exist():
    missing = sorted({f"{doc}: {name}" for doc, name in quoted(MODULE)
                      if not name.endswith(FILE_SUFFIXES) and not _resolves(name)})
    assert not missing, "quoted deeplab names that do not exist:\n" + "\n".join(missing)


def _key_exists(path: str) -> bool:
    tp: object = Params
    for part in path.split("."):
        while hasattr(tp, "__args__") and not (isinstance(tp, type) and issubclass(tp, BaseModel)):
            tp = next((a for a in tp.__args__ if isinstance(a, type) and issubclass(a, BaseModel)),
                      tp.__args__[0])
        if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
            return True  # below a plain value (a list, a mapping): nothing more to check
        fields = {f.alias or n: f for n, f in tp.model_fields.items()} | dict(tp.model_fields)
        if part not in fields:
            return False
        tp = fields[part].annotation
    return True


def test_quoted_params_keys_exist_in_the_schema():
    checked = [(doc, key) for doc, key in quoted(KEY) if key not in NOT_KEYS
               and not key.endswith(FILE_SUFFIXES)  # model.onnx: a file name
               and (not key.startswith("mlflow.") or key == "mlflow.experiment")]
    missing = sorted({f"{doc}: {key}" for doc, key in checked
                      if not _key_exists(key.replace("register.", "registration.", 1)
                                         if key.startswith("register.") else key)})
    assert not missing, "quoted params keys that the schema does not have:\n" + "\n".join(missing)


def test_pointers_to_doc_headings_exist():
    missing = []
    for doc in DOCS:
        for m in HEADING.finditer(doc.read_text()):
            target = (REPO / m.group(1)).read_text()
            if not re.search(rf"^#+ {re.escape(m.group(2))}\s*$", target, re.M):
                missing.append(f"{doc.name}: {m.group(1)} \"{m.group(2)}\"")
    assert not missing, "pointers to headings that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("key, exists", [("finetune.init", True), ("finetune.inti", False),
                                         ("data.synthetic.seed", True), ("registration.promote", True)])
def test_the_key_check_can_fail(key, exists):
    assert _key_exists(key) is exists


def test_the_path_and_module_checks_can_fail():
    assert _resolves("deeplab.serving.promote.assign_alias")
    assert not _resolves("deeplab.serving.registry.model_digest")
    assert not _resolves("deeplab.data.synthetic")
    assert yaml.safe_load((REPO / "params.yaml").read_text())["register"]["promote"]


def test_every_params_section_is_covered_by_the_key_check():
    assert set(SECTIONS) == set(yaml.safe_load((REPO / "params.yaml").read_text()))


# Tables whose first column is `row` quote reports/ablations.csv; a paragraph after
# `<!-- reports/<name>.json -->` quotes that report. Each quoted number equals the report's,
# rounded to the digits quoted.
TABLE_COLUMNS = {"mIoU": ("miou",), "val mIoU": ("miou",), "95% interval": ("miou_low", "miou_high"),
                 "multiply-adds (B)": ("madds_b",), "ms / image": ("ms_per_image",)}
NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*\.\d+|(?<![\w.,])\d{1,3}(?:,\d{3})+(?![\d.])")
REPORT_NOTE = re.compile(r"<!-- (reports/\w+\.json) -->\n(.+?)(?:\n\n|\Z)", re.S)


def _equal(quoted: str, value: float) -> bool:
    """`quoted` is `value` rounded to the digits quoted (either way at a tie: 0.7735 -> 0.773)."""
    digits = len(quoted.split(".")[1]) if "." in quoted else 0
    return abs(float(quoted.replace(",", "")) - value) <= 0.5 * 10 ** -digits + 1e-9


def _report_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| row |") and i + 2 < len(lines) and lines[i + 1].startswith("|---") \
                and lines[i + 2].startswith("| `"):  # rows named as the report names them
            rows = []
            for body in lines[i + 2:]:
                if not body.startswith("|"):
                    break
                rows.append([c.strip() for c in body.strip().strip("|").split("|")])
            tables.append((cells, rows))
    return tables


def quoted_report_numbers(doc: Path) -> list[str]:
    """Each number `doc` quotes from a committed report that differs from it, as a line."""
    text, wrong = doc.read_text(), []
    table = pd.read_csv(REPO / "reports" / "ablations.csv").set_index("row")
    for header, rows in _report_tables(text):
        for cells in rows:
            row = cells[0].strip("`")
            if row not in table.index:
                wrong.append(f"{doc.name}: row {row} is not in reports/ablations.csv")
                continue
            for name, cell in zip(header[1:], cells[1:]):
                columns = TABLE_COLUMNS.get(name)
                numbers = NUMBER.findall(cell)
                if columns is None or len(numbers) != len(columns):
                    wrong.append(f"{doc.name}: {row}, column {name!r}: cannot check {cell!r}")
                    continue
                wrong += [f"{doc.name}: {row} {c} quoted {n}, the report has {table.loc[row, c]}"
                          for n, c in zip(numbers, columns) if not _equal(n, table.loc[row, c])]
    for report, paragraph in REPORT_NOTE.findall(text):
        values = [v for v in json.loads((REPO / report).read_text()).values()
                  if isinstance(v, (int, float))]
        wrong += [f"{doc.name}: {n} is not a value of {report}" for n in NUMBER.findall(paragraph)
                  if not any(_equal(n, v) for v in values)]
    return wrong


def test_numbers_quoted_from_committed_reports_equal_them():
    checked = [doc for doc in DOCS if _report_tables(doc.read_text()) or REPORT_NOTE.search(doc.read_text())]
    assert REPO / "README.md" in checked  # the README's results are among them
    wrong = [line for doc in checked for line in quoted_report_numbers(doc)]
    assert not wrong, "numbers that differ from the committed reports:\n" + "\n".join(wrong)


def test_the_report_number_check_can_fail(tmp_path):
    table = pd.read_csv(REPO / "reports" / "ablations.csv").set_index("row")
    miou = table.loc["main_os16", "miou"]
    calibration = json.loads((REPO / "reports" / "calibration.json").read_text())
    doc = tmp_path / "doc.md"
    doc.write_text(f"| row | mIoU |\n|---|---|\n| `main_os16` | {miou + 0.01:.3f} |\n| `nope` | 0.5 |\n\n"
                   f"<!-- reports/calibration.json -->\nT = {calibration['temperature'] + 0.1:.3f}.\n")
    wrong = quoted_report_numbers(doc)
    assert len(wrong) == 3 and "main_os16 miou" in wrong[0] and "nope" in wrong[1], wrong
    doc.write_text(f"| row | mIoU |\n|---|---|\n| `main_os16` | {miou:.3f} |\n\n"
                   f"<!-- reports/calibration.json -->\nT = {calibration['temperature']:.3f}.\n")
    assert quoted_report_numbers(doc) == []
