"""Safe by default, round two: each test is one hostile probe that the earlier code failed
(crafted programs, tampered registered models, bad values that passed validation, full disks,
symlinks, YAML bombs and duplicate keys)."""

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from deeplab.config import ConfigError, load_params, parse_params, read_yaml
from deeplab.errors import DiskFullError, ModelFileError, RegistryError, UnsafeFileError
from deeplab.model import DeepLabV3Plus
from deeplab.model_files import save_model
from deeplab.serving.export import export_program
from deeplab.serving.predict import main as predict_main
from deeplab.serving.segmenter import Segmenter, load_segmenter

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


class Evil:
    """Unpickling this runs a shell command: what a crafted file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def small_net(seed: int = 0, num_classes: int = 21) -> DeepLabV3Plus:
    torch.manual_seed(seed)
    return DeepLabV3Plus(num_classes, "mobilenet_v2", 16, aspp_channels=8,
                         decoder_channels=8).eval()


def rewrite_zip(src: Path, dst: Path, change) -> None:
    """Copy a zip archive, letting `change(name, data)` return new bytes (or None: drop)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info, data)


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("program") / "m.pt2"
    export_program(Segmenter(small_net()), path, example_size=33, max_size=128)
    return path


# --- 1. A crafted exported program runs no code ---------------------------------------------

def _pickled_constant(program: Path, out: Path, marker: Path) -> Path:
    import io

    buffer = io.BytesIO()
    torch.save(Evil(marker), buffer)
    config_name = next(n for n in zipfile.ZipFile(program).namelist()
                       if n.endswith("model_constants_config.json"))
    config = json.loads(zipfile.ZipFile(program).read(config_name))
    key, entry = next(iter(config["config"].items()))
    entry["use_pickle"] = True
    target = entry["path_name"]

    def change(name, data):
        if name == config_name:
            return json.dumps(config).encode()
        if name.endswith(f"data/constants/{target}"):
            return buffer.getvalue()
        return data

    rewrite_zip(program, out, change)
    return out


def test_crafted_program_with_a_pickled_constant_runs_nothing(tmp_path, program, capsys):
    marker = tmp_path / "pwned"
    evil = _pickled_constant(program, tmp_path / "evil.pt2", marker)
    with pytest.raises(UnsafeFileError, match="stored pickled"):
        load_segmenter(evil)
    assert not marker.exists()
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(images / "a.png")
    assert predict_main(["--model", str(evil), "--input", str(images),
                         "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "evil.pt2" in err[0]
    assert not marker.exists() and not (tmp_path / "out").exists()
    # Even if the check were bypassed, torch's loader runs with weights-only loading forced on.
    from deeplab.model_files import _weights_only_loads

    with _weights_only_loads(), pytest.raises(Exception):
        torch.export.load(str(evil))
    assert not marker.exists()


@pytest.mark.parametrize("member", ["data/aotinductor/model/model.so", "data/constants/custom_obj_0",
                                    "data/weights/model.pt", "../escape"])
def test_programs_with_members_a_plain_export_lacks_are_refused(tmp_path, program, member):
    top = zipfile.ZipFile(program).namelist()[0].split("/")[0]
    out = tmp_path / "odd.pt2"
    with zipfile.ZipFile(program) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        zout.writestr(f"{top}/{member}", b"\x80\x02payload")
    with pytest.raises(UnsafeFileError, match="refused"):
        load_segmenter(out)


def test_crafted_example_inputs_are_refused(tmp_path, program):
    import io

    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save(Evil(marker), buffer)
    out = tmp_path / "evil.pt2"
    rewrite_zip(program, out, lambda name, data: buffer.getvalue()
                if "data/sample_inputs/" in name else data)
    with pytest.raises(UnsafeFileError, match="example inputs"):
        load_segmenter(out)
    assert not marker.exists()


def test_a_plain_program_still_loads(program):
    x = torch.randint(0, 256, (1, 37, 41, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(load_segmenter(program)(x), Segmenter(small_net())(x))


# --- 2 and 3. Registered models are verified on load ----------------------------------------

REGISTER = parse_params({"seed": 0, "mlflow": {"experiment": "test"},
                         "register": {"model_name": "seg", "min_miou": 0.0,
                                      "inference": {"output_stride": 16, "scales": [1.0],
                                                    "flip": False}}},
                        sections=("register", "mlflow"))


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """A model registered as `seg` version 1 in a SQLite store under tmp_path; yields the
    folder of its logged artifacts."""
    import mlflow

    from deeplab.serving.registry import register

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    save_model(tmp_path / "finetune.pt", small_net(), stage="finetune")
    (tmp_path / "metrics.json").write_text(json.dumps({"miou": 0.5}))
    register(tmp_path / "finetune.pt", tmp_path / "metrics.json", REGISTER)
    mlmodel = next((tmp_path / "mlartifacts").rglob("MLmodel"))
    yield mlmodel.parent
    mlflow.set_tracking_uri(None)


def _artifact(model_dir: Path, name: str) -> Path:
    artifacts = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["python_function"]["artifacts"]
    return model_dir / artifacts[name]["path"]


def test_weights_changed_after_registration_are_refused(registered, tmp_path):
    assert load_segmenter("models:/seg@champion") is not None  # untouched: loads
    weights = _artifact(registered, "model_file")
    state = torch.load(weights, weights_only=True)
    state["state_dict"] = {k: torch.zeros_like(v) for k, v in state["state_dict"].items()}
    torch.save(state, weights)
    for uri in ("models:/seg@champion", "models:/seg/1"):
        with pytest.raises(ModelFileError, match=rf"{uri}: its weights or strategy differ"):
            load_segmenter(uri)
    # The pyfunc model checks the same, against the digest in its own metadata.
    import mlflow.pyfunc

    with pytest.raises(Exception, match="differ from what was registered"):
        mlflow.pyfunc.load_model("models:/seg@champion")


def test_registry_digest_is_checked_even_if_the_metadata_was_rewritten_too(registered):
    """A tamperer who also rewrites MLmodel's metadata is caught by the registry's tag."""
    from deeplab.model_files import state_digest

    weights = _artifact(registered, "model_file")
    state = torch.load(weights, weights_only=True)
    state["state_dict"] = {k: v + 1 for k, v in state["state_dict"].items()}
    torch.save(state, weights)
    mlmodel = yaml.safe_load((registered / "MLmodel").read_text())
    strategy = json.loads(_artifact(registered, "strategy").read_text())
    mlmodel["metadata"]["model_sha256"] = state_digest(state, strategy)
    (registered / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(ModelFileError, match="models:/seg@champion: its weights or strategy differ"):
        load_segmenter("models:/seg@champion")


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "must be a mapping"),
    ("{not json", "not readable JSON"),
    ('{"output_stride": 16, "scales": "abc", "flip": false}', "scales"),
    ('{"output_stride": 16, "scales": [], "flip": false}', "scales: expected at least 1 items"),
    ('{"output_stride": 7, "scales": [1.0], "flip": false}', "output_stride: expected 8, 16 or 32"),
])
def test_a_tampered_strategy_file_is_one_clear_error(registered, text, message):
    _artifact(registered, "strategy").write_text(text)
    with pytest.raises(ModelFileError) as info:
        load_segmenter("models:/seg@champion")
    assert str(info.value).startswith("models:/seg@champion: its strategy.json")
    assert message in str(info.value) and "\n" not in str(info.value)


# --- 4 and 5. Wrong results -------------------------------------------------------------------

@pytest.mark.parametrize("value", ["NaN", "Infinity", "1.5", "-0.1", "true", '"0.7"'])
def test_register_refuses_a_miou_that_is_not_a_number_in_0_1(tmp_path, value):
    from deeplab.serving.registry import read_miou

    path = tmp_path / "metrics.json"
    path.write_text('{"miou": %s}' % value)
    with pytest.raises(RegistryError, match="'miou' must be a number in"):
        read_miou(path)


@pytest.mark.parametrize("args, message", [
    (["--scales", "0"], "--scales[0]: expected a value greater than or equal to 0.1"),
    (["--scales", "-1"], "--scales[0]: expected a value greater than or equal to 0.1"),
    (["--scales", "1e-9"], "--scales[0]: expected a value greater than or equal to 0.1"),
    (["--scales", "nan"], "--scales[0]: expected a finite number"),
    (["--scales", "1000"], "--scales[0]: expected a value less than or equal to 4"),
    (["--scales", "1", "1"], "--scales: expected a list without duplicates"),
])
def test_predict_options_follow_the_params_schema(tmp_path, capsys, args, message):
    save_model(tmp_path / "m.pt", small_net())
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    code = predict_main(["--model", str(tmp_path / "m.pt"), "--input", str(tmp_path / "a.png"),
                         "--output", str(tmp_path / "out"), *args])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- 6. Values that passed validation, then crashed or ran forever --------------------------

def _with(path: str, value):
    params = json.loads(json.dumps(PARAMS))
    *parents, key = path.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[key] = value
    return params


@pytest.mark.parametrize("path, value, message", [
    ("seed", 2**70, "seed: expected a value less than or equal to 4294967295"),
    ("data.synthetic.seed", 2**40, "data.synthetic.seed: expected a value less than or equal to"),
    ("pretrain.iterations", 10**30, "pretrain.iterations: expected a value less than or equal to 10000000"),
    ("evaluate.scales", [1000.0], "evaluate.scales[0]: expected a value less than or equal to 4"),
    ("register.inference.scales", [1e-9], "register.inference.scales[0]: expected a value greater"),
    ("evaluate.pad_to", 10**6, "evaluate.pad_to: expected a value less than or equal to 8192"),
    ("finetune.crop_size", 10**6, "finetune.crop_size: expected a value less than or equal to 8192"),
    ("register.model_name", "a..b", "register.model_name: expected a name"),
    ("mlflow.experiment", "../../etc", "mlflow.experiment: expected a name"),
    ("mlflow.experiment", "two\nlines", "mlflow.experiment: expected a name"),
])
def test_values_beyond_sane_bounds_are_refused(path, value, message):
    with pytest.raises(ConfigError) as info:
        parse_params(_with(path, value))
    assert message in str(info.value)


def test_the_default_params_and_the_recipes_stay_within_the_bounds():
    from deeplab.recipe import apply_recipe, load_recipe

    params = load_params(REPO / "params.yaml")
    for recipe in sorted((REPO / "recipes").glob("*.yaml")):
        apply_recipe(params, load_recipe(recipe), str(recipe))


# --- 7. Symlinks under a local dataset root -----------------------------------------------

def test_dangling_links_and_link_loops_under_a_local_root_are_named_and_skipped(tmp_path, caplog):
    from deeplab.data.signature import tree_signature

    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "JPEGImages" / "a.jpg").write_bytes(b"x")
    before = tree_signature([str(root)])
    (root / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (root / "loop").symlink_to(root / "loop")
    assert tree_signature([str(root)]) == before
    assert "dangling.png: skipped" in caplog.text and "loop: skipped" in caplog.text


# --- 8 and 9. Full disks ----------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(kib)`: a tmpfs of that size mounted under tmp_path (needs root, as on these
    machines and CI)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts = []

    def mount(kib: int) -> Path:
        path = tmp_path / f"disk{len(mounts)}"
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)],
                       check=True)
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def full_disk(small_disk):
    return small_disk(256)


def test_a_checkpoint_or_model_file_on_a_full_disk_is_named_and_leaves_nothing(full_disk):
    from deeplab.io import save_torch

    big = DeepLabV3Plus(21, "mobilenet_v2", 16, aspp_channels=64, decoder_channels=64)
    with pytest.raises(DiskFullError, match=r"model\.pt: no space left on device"):
        save_model(full_disk / "model.pt", big)
    with pytest.raises(DiskFullError, match=r"run\.ckpt: no space left on device"):
        save_torch(full_disk / "run.ckpt", {"model": big.state_dict()})
    assert list(full_disk.iterdir()) == []


def test_predict_onto_a_full_disk_is_one_line_and_written_results_are_whole(tmp_path, full_disk,
                                                                          capsys):
    save_model(tmp_path / "m.pt", small_net())
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(12):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(images / f"{k:02d}.png")
    filler = full_disk / "filler"
    filler.write_bytes(b"\0" * (200 * 1024))  # leave room for a few results only
    code = predict_main(["--model", str(tmp_path / "m.pt"), "--input", str(images),
                         "--output", str(full_disk / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "no space left on device" in err[0], err
    assert str(full_disk / "out") in err[0]
    written = sorted((full_disk / "out").iterdir())
    assert not [p for p in written if p.name.startswith(".")]  # no temporary files left
    for path in written:  # every result that exists is whole
        with Image.open(path) as img:
            img.load()


def test_register_onto_a_full_disk_names_the_cause_in_one_line(tmp_path, small_disk):
    """mlflow.db on a full disk: the one line says the disk is full (SQLite's own cause), not
    SQLAlchemy's 'Query-invoked autoflush' wrapper."""
    full_disk = small_disk(8192)  # an empty MLflow store takes about 1 MB
    work = tmp_path / "repo"
    (work / "reports").mkdir(parents=True)
    save_model(work / "finetune.pt", small_net())
    (work / "reports/metrics.json").write_text(json.dumps({"miou": 0.5}))
    (work / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    env = {**os.environ, "DVC_ROOT": str(full_disk), "MLFLOW_TRACKING_URI":
           f"sqlite:///{full_disk / 'mlflow.db'}", "TQDM_DISABLE": "1"}
    # Create the store while there is room, then fill the disk.
    script = ("import mlflow; from deeplab.tracking import setup; setup('deeplabv3plus')")
    subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd=work,
                   capture_output=True, timeout=300)
    free = os.statvfs(full_disk).f_bavail * os.statvfs(full_disk).f_frsize
    (full_disk / "filler").write_bytes(b"\0" * free)
    proc = subprocess.run([sys.executable, str(REPO / "pipeline/register.py"), "--model",
                           "finetune.pt", "--metrics", "reports/metrics.json", "--out",
                           "reports/registry.json"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[:3000]
    assert len(lines) == 1 and ("disk is full" in lines[0] or "no space left" in lines[0]), lines
    assert "autoflush" not in lines[0]


# --- 10 and 11. YAML the loader must refuse before anything runs ----------------------------

def _bomb(levels: int = 9) -> str:
    text = 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for k in range(1, levels):
        text += f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]\n"
    return text


def test_a_billion_laughs_params_file_is_refused_in_under_a_second(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text() + _bomb())
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="expand to more than 100,000 values"):
        load_params(path)
    assert time.perf_counter() - start < 1.0


def test_the_git_hooks_refuse_a_bomb_before_dvc_sees_it(tmp_path):
    """The documented guard (`git config core.hooksPath .githooks`): a commit of a bomb is
    refused, and one arriving by a merge is reported."""
    import shutil

    work = tmp_path / "repo"
    work.mkdir()
    shutil.copytree(REPO / ".githooks", work / ".githooks")
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def git(*args, check=True):
        return subprocess.run(["git", *args], cwd=work, env=env, capture_output=True, text=True,
                              check=check, timeout=60)

    git("init", "-q")
    git("config", "core.hooksPath", ".githooks")
    git("add", ".")
    git("commit", "-qm", "good params")
    (work / "params.yaml").write_text((REPO / "params.yaml").read_text() + _bomb())
    git("add", "params.yaml")
    refused = git("commit", "-qm", "a bomb", check=False)
    assert refused.returncode != 0 and "expand to more than" in refused.stderr
    (work / "params.yaml").write_text((REPO / "params.yaml").read_text().replace(
        "seed: 0", "seed: 0\nseed: 1", 1))
    git("add", "params.yaml")
    refused = git("commit", "-qm", "a duplicate", check=False)
    assert refused.returncode != 0 and "key 'seed' appears twice" in refused.stderr


def test_duplicate_keys_are_refused_naming_the_key_and_both_lines(tmp_path):
    text = (REPO / "params.yaml").read_text()
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("lr: 0.05"))
    lines.insert(at + 1, "  lr: 0.5")
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"key 'lr' appears twice in one mapping \(lines {at + 1} "
                                          rf"and {at + 2}\)"):
        load_params(path)
    assert read_yaml(REPO / "params.yaml") == PARAMS  # the real file reads as before
