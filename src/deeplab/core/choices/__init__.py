"""The catalogue of every extension axis, one module each, plain data (no torch, nothing else
of ours): backbones and output strides (`backbones`), data sources and layouts (`data`),
losses and their grammar (`losses`), runtimes, precisions and deployed formats (`runtimes`).
The params schema takes its choices from here; each implementation's table checks itself
against its catalogue when it loads. Adding a choice: its implementation, and its name here."""
