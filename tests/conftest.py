"""Fixtures shared by every test module (helper functions live in tests/helpers/).

Global state is restored by fixtures whether a test passes or fails: environment variables
through `monkeypatch`, MLflow's tracking URI by `restore_mlflow` (autouse).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import servers

# The cores shared among pytest-xdist's workers, and among the processes each starts (DVC
# stages, servers: torch, OpenMP and MKL read OMP_NUM_THREADS): more threads than cores makes
# OpenMP's spinning threads wait on each other, many times slower than one thread each.
THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
torch.set_num_threads(THREADS)
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
os.environ.setdefault("TQDM_DISABLE", "1")
REPO = Path(__file__).resolve().parents[1]


# Scheduling (pytest-xdist gives whole files to workers, in this order): the file that builds
# the shared tiny `dvc repro` first, the long files that copy it last; the rest between.
FIRST = ("pipeline/test_first_repro.py",)
LAST = ("pipeline/test_share.py", "pipeline/test_own_data.py", "pipeline/test_reruns.py",
        "pipeline/test_sweep.py")  # the longest first: the worker that ends first takes the next


def pytest_collection_modifyitems(config, items):
    def order(item) -> int:
        path = item.path.as_posix()
        return 0 if path.endswith(FIRST) else 2 if path.endswith(LAST) else 1
    items.sort(key=order)  # stable: the order inside each group is kept


@pytest.fixture(autouse=True)
def restore_mlflow():
    """Whatever a test does to MLflow's global state (tracking URI, active experiment: MLflow
    keeps the latter in the MLFLOW_EXPERIMENT_ID environment variable) is undone, pass or fail."""
    outer = os.environ.get("MLFLOW_EXPERIMENT_ID")
    yield
    if outer is None:
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    else:
        os.environ["MLFLOW_EXPERIMENT_ID"] = outer
    if "mlflow" in sys.modules:
        mlflow = sys.modules["mlflow"]
        mlflow.set_tracking_uri(None)
        import mlflow.tracking.fluent as fluent

        fluent._active_experiment_id = None


@pytest.fixture
def repo_root():
    return REPO


@pytest.fixture(scope="session")
def tiny_train_csv(tmp_path_factory):
    """A VOC-style train_aug list (absolute paths) of six 40x40 synthetic images."""
    import pandas as pd

    from deeplab.core.schema import PreprocessConfig, SyntheticData
    from deeplab.data.classes import ClassList
    from deeplab.prepare.preprocess import preprocess
    from deeplab.prepare.synthetic import generate

    root = tmp_path_factory.mktemp("tiny")
    generate(root / "raw", SyntheticData(seed=0, image_size=40, coco_train_images=2,
                                         coco_val_images=1, train_images=6, val_images=2,
                                         sbd_images=0))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        preprocess({"coco_root": "raw/coco", "root": "raw/VOC2012", "sbd_root": None,
                    "layout": "voc", "classes": ClassList.default(21).as_dict()},
                   root / "processed",
                   PreprocessConfig(min_pixels=0, hard_classes=[], on_bad_sample="error", workers=1))
    finally:
        os.chdir(cwd)
    (root / "processed/classes.json").rename(root / "classes.json")
    for split, name in (("train", "train_abs.csv"), ("val", "val_abs.csv")):
        rows = pd.read_csv(root / f"processed/{split}.csv", dtype=str)
        rows["image"] = [str(root / p) for p in rows["image"]]
        rows["mask"] = [str(root / p) for p in rows["mask"]]
        rows.to_csv(root / name, index=False)
    return root / "train_abs.csv"


@pytest.fixture(scope="session")
def tiny_val_csv(tiny_train_csv):
    """The matching VOC-style val list (absolute paths) of two 40x40 images."""
    return tiny_train_csv.with_name("val_abs.csv")


@pytest.fixture(scope="session")
def tiny_classes(tiny_train_csv):
    """The class list (classes.json) of the tiny lists: VOC's 21 classes."""
    return tiny_train_csv.with_name("classes.json")


@pytest.fixture
def model_file(tmp_path):
    """A saved tiny 21-class model (MobileNetV2, 16-channel heads)."""
    from helpers.models import tiny_net

    from deeplab.model.files import save_model

    path = tmp_path / "finetune.pt"
    save_model(path, tiny_net(), stage="finetune", val_miou=0.5)
    return path


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """A fresh SQLite tracking store under tmp_path (the repository root for the test), the
    workspace (no `dvc exp run`)."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    return tmp_path


@pytest.fixture
def dead_pid():
    """The id of a process that has exited (for 'left behind by a killed run' files)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(kib, read_only=False)`: a tmpfs of that size mounted under tmp_path (needs
    root, as on these machines and CI), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts = []

    def mount(kib: int, read_only: bool = False) -> Path:
        path = tmp_path / f"disk{len(mounts)}"
        path.mkdir()
        options = f"size={kib}k" + (",ro" if read_only else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def full_disk(small_disk):
    """A 256 KiB filesystem."""
    return small_disk(256)


@pytest.fixture(scope="session")
def voc_raw(tmp_path_factory):
    """The synthetic VOC + SBD + COCO folders of `helpers.data.VOC_CFG` (read-only: copy it to
    break it)."""
    from helpers.data import VOC_CFG

    from deeplab.prepare.synthetic import generate

    root = tmp_path_factory.mktemp("voc_raw")
    generate(root, VOC_CFG)
    return root


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (.ci/run installs it)


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium driven by Playwright (the system browser: nothing is downloaded);
    the test skips, saying why, where either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -r requirements.txt)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium; "
                    f".ci/run does)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


def pytest_sessionfinish(session, exitstatus):
    """The run fails when a server a test started outlives it (`helpers.servers`); whatever is
    left is stopped. Checked once, by the process that ran the session (pytest-xdist's
    controller, after its workers ended)."""
    if hasattr(session.config, "workerinput"):
        return
    left = servers.marked_alive()
    if left:
        for pid, _ in left:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        print("\nprocesses started by tests were still running at the end (stopped now):\n" +
              "\n".join(f"  {pid}: {cmd}" for pid, cmd in left))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
