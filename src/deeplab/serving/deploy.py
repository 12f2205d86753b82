"""The deploy stage: the finetuned model as the files its runtimes run, and the formats to
measure (`params.deploy.formats`, each `runtime/precision`).

`models/deploy/` gets `model.onnx` (fp32, with probabilities), `model.int8.onnx` when an int8
format is listed (static QDQ, calibrated on `calibration_images` crops of the training split),
and `deploy.json`: the sha256 of each file, the source model's digest and the formats. The
evaluate stage measures every format (mIoU with its interval, ms per image) and register
refuses one whose mIoU falls more than `max_drop` below fp32.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..core.choices.runtimes import ONNX_FILES
from ..core.errors import ConfigError, DeeplabError, RegistryError
from ..core.hashing import file_sha256, value_sha256
from ..core.io import atomic_dir
from ..core.schema import DeployConfig, ServeConfig
from ..model.files import read_model_file, state_digest
from ..model.inference import InferenceStrategy
from .runtimes import INT8_SUFFIX, Runner, open_runner

log = logging.getLogger(__name__)
MANIFEST = "deploy.json"


sha256 = file_sha256  # a deployed file's digest


def deploy_model(cfg: DeployConfig, model_file: Path, calibration_list: Path, out: Path,
                     seed: int = 0) -> dict[str, Any]:
    """Write the deployed files of `model_file` into `out` (replaced whole, atomically)."""
    from .onnx_files import export_onnx
    from .quantize import calibration_crops, quantize_int8
    from .segmenter import segmenter_from_state

    state = read_model_file(model_file)
    digest = state_digest(state, {})
    seg = segmenter_from_state(state, InferenceStrategy(), str(model_file))
    with atomic_dir(out) as tmp:
        fp32 = tmp / "model.onnx"
        export_onnx(seg, fp32, probabilities=True, source_sha256=digest)
        if any(f.endswith("/int8") for f in cfg.formats):
            crops = calibration_crops(calibration_list, cfg.calibration_images,
                                      cfg.calibration_size, seed)
            quantize_int8(fp32, tmp / f"model{INT8_SUFFIX}", crops)
        files = {p.name: sha256(p) for p in sorted(tmp.glob("*.onnx"))}
        manifest = {"source": str(model_file), "source_sha256": digest,
                    "files": files, "formats": list(cfg.formats)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("deploy: %s", ", ".join(f"{name} {digest[:12]}" for name, digest in files.items()))
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """The deploy folder's manifest, every file checked against its recorded sha256."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a readable deploy manifest ({exc}); run the deploy "
                          f"stage (dvc repro deploy)") from None
    for name, digest in files.items():
        if "/" in name or name.startswith(".") or sha256(folder / name) != digest:
            raise ConfigError(f"{folder / name}: differs from the sha256 in {path} (changed "
                              f"after the deploy stage); rerun it")
    return manifest


def check_belongs(folder: Path, digest: str, classes: Any) -> dict[str, Any]:
    """The deploy folder's manifest, refused in one line (RegistryError) unless it and every
    ONNX file in it were written from the model of `digest` (`state_digest(state, {})`) with
    its class list: a stale folder (the model retrained, deploy not rerun) or another model's
    file copied in with its sha256 fixed in the manifest is not registered."""
    from .onnx_files import check_onnx, read_metadata

    manifest = read_manifest(folder)
    if manifest.get("source_sha256") != digest:
        raise RegistryError(f"{folder / MANIFEST}: written for another model (source_sha256 "
                            f"{str(manifest.get('source_sha256'))[:12]}..., this one is "
                            f"{digest[:12]}...); rerun the deploy stage (dvc repro deploy)")
    for name in manifest["files"]:
        path = folder / name
        if not name.endswith(".onnx"):
            continue
        try:
            found, _, props = read_metadata(check_onnx(path), path)
        except DeeplabError as exc:
            raise RegistryError(str(exc)) from None
        if props.get("source_sha256") != digest or tuple(found.names) != tuple(classes.names):
            raise RegistryError(f"{path}: exported from another model (its source_sha256 or its "
                                f"{len(found)} classes differ from this model's {len(classes)}); "
                                f"rerun the deploy stage (dvc repro deploy)")
    return manifest


def runners(folder: Path, formats: list[str], threads: int) -> Iterator[tuple[str, Runner]]:
    """(format, runner) for each deployed format this machine can run; a format it cannot
    (bf16 without AVX512_BF16/AMX) is skipped with one log line."""
    read_manifest(folder)
    for fmt in formats:
        runtime, precision = fmt.split("/")
        try:
            yield fmt, open_runner(folder, runtime, precision, threads)
        except DeeplabError as exc:
            log.warning("deploy format %s skipped: %s", fmt, exc)




@dataclass(frozen=True)
class Deployment:
    """What a registered version carries besides its weights: the deployed files kept (within
    `max_drop` of fp32), how it is served, and a digest of both."""

    files: dict[str, Path]        # file name -> path
    serve: dict[str, Any]         # register.serve, plus the files' sha256
    formats: dict[str, float]     # kept format -> val mIoU
    digest: str


def fastest(deployed: dict[str, dict[str, float]], kept: dict[str, float]) -> list[str]:
    """The kept formats, fastest first by evaluate's ms per image (torch fp32 last when it was
    not measured: the format that runs everywhere)."""
    order = sorted(kept, key=lambda fmt: (deployed[fmt]["ms_per_image"], fmt))
    return order + (["torch/fp32"] if "torch/fp32" not in order else [])


def deployment(serve: ServeConfig, max_drop: float, folder: Path | None,
               deployed: dict[str, dict[str, float]], temperature: float = 1.0) -> Deployment:
    """The files and serving settings a version registers (with the calibration
    `temperature` its probabilities are served under); RegistryError (one line) when the
    serving format is not deployed or falls more than `max_drop` below fp32. `auto` serves the
    fastest format within `max_drop` that evaluate measured on this machine, and records why
    (`auto`: the order to fall back along, each format's mIoU and ms, the CPU measured on)."""
    from ..model.device import cpu_name

    files: dict[str, Path] = {}
    formats: dict[str, float] = {}
    digests: dict[str, str] = {}
    if folder is not None:
        digests = read_manifest(folder)["files"]
        for fmt, row in deployed.items():
            runtime, precision = fmt.split("/")
            if row["drop"] > max_drop:
                log.warning("deploy format %s left out: val mIoU %.4f is %.4f below fp32 "
                            "(deploy.max_drop %s)", fmt, row["miou"], row["drop"], max_drop)
                continue
            formats[fmt] = row["miou"]
            if runtime != "torch" and ONNX_FILES[precision] in digests:
                files[ONNX_FILES[precision]] = folder / ONNX_FILES[precision]
    settings = serve.model_dump()
    if serve.runtime == "auto":
        order = fastest(deployed, formats)
        settings["runtime"], settings["precision"] = order[0].split("/")
        settings["auto"] = {"order": order, "cpu": cpu_name(), "measured": {
            fmt: {k: deployed[fmt][k] for k in ("miou", "ms_per_image")} for fmt in order
            if fmt in deployed}}
        log.info("register.serve auto: %s (%s)", order[0], ", ".join(
            f"{fmt} {deployed[fmt]['ms_per_image']:.1f} ms" for fmt in order if fmt in deployed))
    fmt = f"{settings['runtime']}/{settings['precision']}"
    if fmt != "torch/fp32" and fmt not in formats:
        reason = (f"{deployed[fmt]['drop']:.4f} below fp32, more than deploy.max_drop {max_drop}"
                  if fmt in deployed else "not among the measured deploy.formats")
        raise RegistryError(f"register.serve: {fmt} is {reason}; serve another format or "
                            f"raise deploy.max_drop")
    settings["files"] = {name: digests[name] for name in sorted(files)}
    if temperature != 1.0:  # (a settings file without it: uncalibrated, as registered before)
        settings["temperature"] = float(temperature)
    digest = value_sha256(settings)
    return Deployment(files, settings, formats, digest)
