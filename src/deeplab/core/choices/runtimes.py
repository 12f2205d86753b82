"""The runtimes a deployed model runs on, the precisions each has, and the deployed file each
ONNX precision reads: plain data, no imports. The schema validates `deploy.formats` and
`register.serve` with these; `serving.runtimes.RUNNERS` holds one runner per runtime
(checked when it loads). A new runtime: its runner, its entry here and in `RUNNERS`."""

RUNTIMES: dict[str, tuple[str, ...]] = {"torch": ("fp32", "bf16"),
                                        "onnxruntime": ("fp32", "int8"),
                                        "openvino": ("fp32", "bf16", "int8")}
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
FORMATS: tuple[str, ...] = tuple(f"{r}/{p}" for r, ps in RUNTIMES.items() for p in ps)
ONNX_FILES: dict[str, str] = {"fp32": "model.onnx", "bf16": "model.onnx", "int8": "model.int8.onnx"}


def check_format(runtime: str, precision: str) -> None:
    """ValueError in one line when `runtime` does not exist or has no `precision`."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if precision not in RUNTIMES[runtime]:
        others = [r for r, ps in RUNTIMES.items() if precision in ps]
        raise ValueError(f"{runtime} has no {precision} (it runs {', '.join(RUNTIMES[runtime])}); "
                         f"{precision} runs on {', '.join(others) or 'no runtime'}")
