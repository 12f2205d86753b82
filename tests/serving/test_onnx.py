"""ONNX exports: equal to PyTorch on every backbone at output stride 16 and 8 (ONNX Runtime and
OpenVINO, probabilities and labels), crafted files refused before a runtime reads them, int8
and bf16 where the machine has them, and sliding windows against the whole image."""

import json

import numpy as np
import onnx
import pytest
import torch
from helpers.data import CRACKS
from helpers.models import shallow

from deeplab.core.choices.backbones import BACKBONES
from deeplab.core.errors import ConfigError, InputError, ModelFileError, UnsafeFileError
from deeplab.model import DeepLabV3Plus
from deeplab.prepare.layouts import resolve_classes
from deeplab.prepare.synthetic.scene import render_scene
from deeplab.serving.onnx_files import check_onnx, export_onnx
from deeplab.serving.runtimes import (
    OnnxRuntimeRunner,
    OpenVinoRunner,
    TorchRunner,
    cpu_bf16,
)
from deeplab.serving.segmenter import Segmenter
from deeplab.serving.windows import predict_tiled

CLASSES = resolve_classes("folder", CRACKS, None, 255)


def scenes(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Generated images (objects, textures, clutter) as uint8 N x H x W x 3."""
    rng = np.random.default_rng(seed)
    return np.stack([render_scene(rng, size, 3)[0] for _ in range(count)])


def tiny_segmenter(backbone: str, output_stride: int, seed: int = 0, depth: int | None = None
                   ) -> Segmenter:
    """A 3-class network with 16-channel heads; `depth`: its backbone stages cut to that many
    units (`helpers.models.shallow`)."""
    torch.manual_seed(seed)
    net = DeepLabV3Plus(num_classes=3, backbone=backbone, output_stride=output_stride,
                        aspp_channels=16, decoder_channels=16)
    if depth is not None:
        shallow(net, depth)
    for m in net.modules():  # trained-looking BN statistics, so the outputs are not flat
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return Segmenter(net.eval(), classes=CLASSES).eval()


@pytest.mark.slow
# ResNet-101 cut to two units per stage (`depth=2`) is ResNet-50's graph: one of them stands for both.
@pytest.mark.parametrize("backbone", [b for b in BACKBONES if b != "resnet101"])
@pytest.mark.parametrize("output_stride", [16, 8])
def test_onnx_equals_pytorch_on_every_backbone(tmp_path, backbone, output_stride):
    seg = tiny_segmenter(backbone, output_stride, depth=2)  # depth adds nothing to the check
    path = tmp_path / "m.onnx"
    export_onnx(seg, path, probabilities=True, source_sha256="ab" * 32)
    images = scenes(3, 97)
    odd = scenes(1, 130, seed=1)[:, :113]  # another height and width than the export's example
    with torch.no_grad():
        want = [seg.probabilities(torch.from_numpy(x)).numpy() for x in (images, odd)]
    ort = OnnxRuntimeRunner(path, "fp32", threads=1)
    vino = OpenVinoRunner(path, "fp32", threads=1)
    for runner in (ort, vino):
        for x, ref in zip((images, odd), want):
            probs = runner.probs(x)
            assert probs.shape == ref.shape
            np.testing.assert_allclose(probs, ref, atol=1e-4, rtol=0)  # fp32, 100+ layers
            assert (runner.labels(x) == ref.argmax(1)).mean() >= 0.999
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert json.loads(meta["classes"])["names"] == CRACKS and meta["source_sha256"] == "ab" * 32
    assert json.loads(meta["strategy"])["output_stride"] == output_stride
    assert ort.classes.names == tuple(CRACKS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    seg = tiny_segmenter("mobilenet_v2", 16, depth=2)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(seg, path, probabilities=True)
    return seg, path


def _rewrite(src, dst, change):
    model = onnx.load(str(src))
    change(model)
    dst.write_bytes(model.SerializeToString())  # as a crafted file would be: no onnx checks
    return dst


@pytest.mark.slow
def test_crafted_onnx_files_are_refused_before_a_runtime_reads_them(exported, tmp_path):
    _, path = exported

    def external(model):
        tensor = model.graph.initializer[0]
        tensor.data_location = onnx.TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "../../../etc/passwd"

    def custom_op(model):
        node = onnx.helper.make_node("Run", ["images"], ["x"], domain="evil.ops")
        model.graph.node.insert(0, node)
        model.opset_import.append(onnx.helper.make_opsetid("evil.ops", 1))

    with pytest.raises(UnsafeFileError, match="external data '../../../etc/passwd' outside"):
        OnnxRuntimeRunner(_rewrite(path, tmp_path / "a.onnx", external), "fp32", 1)
    def function_and_another_op(model):  # defines evil.ops.F, uses evil.ops.Run
        custom_op(model)
        model.functions.append(onnx.helper.make_function(
            "evil.ops", "F", ["a"], ["b"], [onnx.helper.make_node("Identity", ["a"], ["b"])],
            [onnx.helper.make_opsetid("", 18)]))

    def constant_of_shape(model):  # a 10^6 x 10^6 constant: ORT out of memory, OpenVINO bad_alloc
        shape = onnx.helper.make_tensor("big", onnx.TensorProto.INT64, [2], [10**6, 10**6])
        model.graph.node.insert(0, onnx.helper.make_node("ConstantOfShape", ["big_shape"], ["huge"]))
        model.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["big_shape"], value=shape))
        model.graph.output.append(onnx.helper.make_tensor_value_info("huge", onnx.TensorProto.FLOAT,
                                                                        ["rows", "cols"]))

    def three_channels_named_two(model):
        props = {p.key: p for p in model.metadata_props}
        classes = json.loads(props["classes"].value)
        classes["names"], classes["palette"] = classes["names"][:2], classes["palette"][:2]
        props["classes"].value = json.dumps(classes)

    with pytest.raises(UnsafeFileError, match=r"operator\(s\) evil.ops.Run"):
        OpenVinoRunner(_rewrite(path, tmp_path / "b.onnx", custom_op), "fp32", 1)
    with pytest.raises(UnsafeFileError, match=r"operator\(s\) evil.ops.Run, which"):
        OpenVinoRunner(_rewrite(path, tmp_path / "f.onnx", function_and_another_op), "fp32", 1)
    big = _rewrite(path, tmp_path / "big.onnx", constant_of_shape)
    for runner in (OnnxRuntimeRunner, OpenVinoRunner):
        with pytest.raises(ModelFileError, match=r"big.onnx: \w+ cannot \w+ it \(out of memory\)"):
            runner(big, "fp32", 1).labels(scenes(1, 65))
    with pytest.raises(ModelFileError, match="names 2 classes but its probabilities have 3 channels"):
        OnnxRuntimeRunner(_rewrite(path, tmp_path / "m.onnx", three_channels_named_two), "fp32", 1)
    (tmp_path / "c.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelFileError, match="c.onnx: not a"):
        check_onnx(tmp_path / "c.onnx")
    check_onnx(path)  # the plain export passes


@pytest.mark.slow
def test_tiles_equal_the_whole_image_away_from_window_borders_and_mostly_near_them(exported):
    seg, path = exported
    image = np.concatenate([np.concatenate(list(scenes(3, 96, seed=s)), axis=1) for s in (4, 5)])
    whole = seg(torch.from_numpy(image)).numpy()  # 192 x 288
    runner = OnnxRuntimeRunner(path, "fp32", threads=1)
    conf = np.full(image.shape[:2], np.nan, dtype=np.float32)

    def keep_max(y: int, probs: np.ndarray) -> None:  # every row seen once, in bands
        assert np.isnan(conf[y:y + probs.shape[1]]).all()
        conf[y:y + probs.shape[1]] = probs.max(0)

    tiled = predict_tiled(runner.probs, image, tile=97, overlap=0.5, on_probs=keep_max)
    agree = (tiled == whole).mean()
    assert agree >= 0.95, agree  # windows see less context than the whole image
    one = predict_tiled(runner.probs, image, tile=400, overlap=0.25)  # one window = whole
    assert (one == whole).mean() >= 0.999
    assert 0 < conf.min() and conf.max() <= 1.001  # every row filled


@pytest.mark.slow
def test_int8_is_static_qdq_calibrated_on_training_crops_and_close_to_fp32(exported, tmp_path):
    from deeplab.serving.quantize import quantize_int8

    seg, path = exported
    crops = list(scenes(8, 81, seed=9)[:, None])
    int8 = tmp_path / "model.int8.onnx"
    quantize_int8(path, int8, crops)
    model = check_onnx(int8)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert {p.key: p.value for p in model.metadata_props}["precision"] == "int8"
    images = scenes(4, 97, seed=3)
    fp32 = OnnxRuntimeRunner(path, "fp32", 1).labels(images)
    for runner in (OnnxRuntimeRunner(int8, "int8", 1), OpenVinoRunner(int8, "int8", 1)):
        assert (runner.labels(images) == fp32).mean() > 0.9


@pytest.mark.slow
def test_bf16_runs_where_the_cpu_has_it_and_is_one_line_elsewhere(exported, monkeypatch):
    seg, path = exported
    images = scenes(2, 97, seed=7)
    if cpu_bf16():
        fp32 = OpenVinoRunner(path, "fp32", 1).labels(images)
        assert (OpenVinoRunner(path, "bf16", 1).labels(images) == fp32).mean() > 0.95
        torch_bf16 = TorchRunner(seg, "bf16", torch.device("cpu")).labels(images)
        assert (torch_bf16 == fp32).mean() > 0.95
    import deeplab.serving.runtimes as runtimes
    monkeypatch.setattr(runtimes, "cpu_bf16", lambda: False)
    with pytest.raises(ConfigError, match="neither AVX512_BF16 nor AMX"):
        OpenVinoRunner(path, "bf16", 1)
    from deeplab.serving.runtimes import open_runner

    with pytest.raises(ConfigError, match=r"onnxruntime has no bf16 \(it runs fp32, int8\); "
                                          r"bf16 runs on torch, openvino"):
        open_runner(path, "onnxruntime", "bf16")
    with pytest.raises(ConfigError, match="torch has no int8 .*int8 runs on onnxruntime, openvino"):
        open_runner(seg, "torch", "int8")


def test_an_int8_request_without_an_int8_file_names_the_fix(tmp_path):
    from deeplab.serving.runtimes import open_runner

    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(InputError, match="model.int8.onnx: no int8 model"):
        open_runner(tmp_path / "model.onnx", "onnxruntime", "int8")
    with pytest.raises(ConfigError, match="runs an ONNX export"):
        open_runner(tmp_path / "m.pt", "openvino", "fp32")
