"""The rank stage: each image's score against a direct computation from the network's logits
under evaluate's temperature, the order, the file's columns (image first), the contact
sheet; an unreadable pool image is named and nothing is written; the pool list changes with
the images only."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.models import reference_logits, tiny_net
from helpers.repo import run_stage
from PIL import Image

from deeplab.core.config import load_params
from deeplab.core.errors import InputError
from deeplab.data.classes import ClassList
from deeplab.model.files import save_model
from deeplab.prepare.pool import write_pool_list

REPO = Path(__file__).parents[2]
CLASSES = ClassList(("background", "ellipse", "rectangle", "triangle", "star"),
                    ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)))


def direct_score(net, image: np.ndarray, score: str, temperature: float, threshold: float) -> float:
    """Mean normalised entropy, or the share of pixels under the threshold, of
    softmax(logits / T) in the reference geometry."""
    p = (reference_logits(net, image) / temperature).softmax(0)
    if score == "entropy":
        return float((torch.special.entr(p).sum(0) / math.log(p.shape[0])).mean())
    return float((p.max(0).values < threshold).float().mean())


@pytest.fixture
def pool(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "pool"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for k, size in enumerate([(40, 52), (33, 33), (60, 45), (48, 48)]):
        base = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)  # smooth to noisy images
        img = np.asarray(Image.fromarray(base).resize(size[::-1], Image.BILINEAR)).copy()
        img = np.clip(img + rng.normal(0, 40 * k, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img_{k}.png")
    net = tiny_net(seed=3, num_classes=len(CLASSES))
    save_model(tmp_path / "m.pt", net, CLASSES, stage="finetune", val_miou=0.0)
    (tmp_path / "calibration.json").write_text(json.dumps({"temperature": 0.02}))  # sharpens an untrained net
    write_pool_list(folder, tmp_path / "pool.csv")
    return tmp_path, net


@pytest.mark.parametrize("score", ["entropy", "low_confidence"])
def test_scores_and_order_against_a_direct_computation(pool, score):
    work, net = pool
    images = {f"pool/img_{k}.png": np.asarray(Image.open(work / "pool" / f"img_{k}.png"))
              for k in range(4)}
    threshold = 0.5
    if score == "low_confidence":  # a threshold inside this net's range of top probabilities
        tops = [(reference_logits(net, im) / 0.02).softmax(0).max(0).values.flatten()
                for im in images.values()]
        threshold = float(torch.cat(tops).median())
    params = load_params(REPO / "params.yaml", sections=("rank",))
    params = params.replace(rank=params.rank.replace(score=score, top_k=2, threshold=threshold))
    run_stage("rank", params, model=work / "m.pt", pool=work / "pool.csv",
              calibration=work / "calibration.json", out=work / "label_next.csv",
              sheet=work / "label_next.png")
    table = pd.read_csv(work / "label_next.csv")
    expected = {name: direct_score(net, im, score, 0.02, threshold) for name, im in images.items()}
    if score == "entropy":
        assert (np.diff(sorted(expected.values())) > 1e-5).all()  # a real order to check
        assert table["image"].tolist() == sorted(expected, key=expected.get, reverse=True)
        assert np.allclose(table["score"], [expected[i] for i in table["image"]], atol=1e-4)
    else:  # pixels at the threshold itself may fall either way between the two computations
        assert 0 < min(expected.values()) and max(expected.values()) < 1
        assert np.allclose(table["score"], [expected[i] for i in table["image"]], atol=0.02)
        assert table["score"].is_monotonic_decreasing
    written = pd.read_csv(work / "label_next.csv")
    assert list(written.columns[:3]) == ["image", "score", "rank"]
    assert [c for c in written.columns if c.startswith("area_")] == [f"area_{n}" for n in CLASSES.names]
    assert np.allclose(written.filter(like="area_").sum(axis=1), 1, atol=1e-3)
    assert written["rank"].tolist() == [1, 2, 3, 4]
    assert Image.open(work / "label_next.png").size[1] > 200  # two rows of three panels


def test_an_unreadable_pool_image_is_named_and_nothing_is_written(pool):
    work, _ = pool
    (work / "pool" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    write_pool_list(work / "pool", work / "pool.csv")
    params = load_params(REPO / "params.yaml", sections=("rank",))
    with pytest.raises(InputError, match="broken.jpg: not a readable image"):
        run_stage("rank", params, model=work / "m.pt", pool=work / "pool.csv",
                  calibration=work / "calibration.json", out=work / "out.csv",
                  sheet=work / "out.png")
    assert not (work / "out.csv").exists() and not (work / "out.png").exists()


def test_the_pool_list_changes_with_the_images_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pool = tmp_path / "pool"
    (pool / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(pool / "a.png")
    (pool / "notes.txt").write_text("not an image")
    assert write_pool_list(pool, tmp_path / "pool.csv") == 1
    before = (tmp_path / "pool.csv").stat().st_mtime_ns
    assert write_pool_list(pool, tmp_path / "pool.csv") == 1
    assert (tmp_path / "pool.csv").stat().st_mtime_ns == before  # unchanged: not rewritten
    Image.fromarray(np.ones((8, 8, 3), np.uint8)).save(pool / "sub" / "b.jpg")
    assert write_pool_list(pool, tmp_path / "pool.csv") == 2
    listed = pd.read_csv(tmp_path / "pool.csv")
    assert listed["image"].tolist() == ["pool/a.png", "pool/sub/b.jpg"]  # relative: same in clones


@pytest.mark.slow
def test_rank_orders_a_known_out_of_distribution_image_first(tmp_path, monkeypatch):
    """The default network trained on ordinary scenes; the pool: three of its training scenes
    and a fourth under the generator's new kind of image (heavy sensor noise). The noisy one
    ranks first by entropy."""
    from deeplab.core.io import save_image
    from deeplab.data.dataset import SegmentationDataset
    from deeplab.engine.init import build_model
    from deeplab.engine.loop import TrainOptions, seed_everything, train
    from deeplab.prepare.synthetic.scene import render_scene, save_jpeg, semantic_label

    monkeypatch.chdir(tmp_path)
    classes = ClassList(("background", "ellipse", "rectangle", "triangle", "star", "cross"),
                        CLASSES.palette + ((128, 0, 128),))
    rng = np.random.default_rng(5)
    rows, scenes = [], []
    for k in range(30):
        state = rng.bit_generator.state
        img, instances = render_scene(rng, 48, len(classes))
        save_jpeg(tmp_path / f"t{k}.jpg", img)
        save_image(tmp_path / f"t{k}.png", Image.fromarray(semantic_label(instances, 48)), format="PNG")
        rows.append({"id": str(k), "image": str(tmp_path / f"t{k}.jpg"), "mask": str(tmp_path / f"t{k}.png")})
        scenes.append(state)
    params = load_params(REPO / "params.yaml", sections=("model", "train", "runtime", "finetune", "rank"))
    sched = params.finetune.replace(iterations=200, crop_size=49, val_every=0, checkpoint_every=200)
    seed_everything(0)
    net = build_model(params.model, len(classes))
    train(net, SegmentationDataset(pd.DataFrame(rows), 49, sched.scale_range, True), sched,
          params.train, params.runtime.replace(workers=0), TrainOptions(tmp_path / "c.ckpt", 0, {}, torch.device("cpu")))
    save_model(tmp_path / "m.pt", net.eval(), classes, stage="finetune", val_miou=0.0)
    pool = tmp_path / "pool"
    pool.mkdir()
    for k in range(3):
        (pool / f"seen_{k}.jpg").write_bytes((tmp_path / f"t{k}.jpg").read_bytes())
    again = np.random.default_rng()
    again.bit_generator.state = scenes[3]  # the fourth training scene, under heavy noise
    save_jpeg(pool / "night.jpg", render_scene(again, 48, len(classes), novel=True)[0])
    write_pool_list(pool, tmp_path / "pool.csv")
    run_stage("rank", params, model=tmp_path / "m.pt", pool=tmp_path / "pool.csv",
              calibration=tmp_path / "none.json", out=tmp_path / "label_next.csv",
              sheet=tmp_path / "label_next.png")
    table = pd.read_csv(tmp_path / "label_next.csv")
    assert Path(table["image"][0]).name == "night.jpg", table[["image", "score"]]
