"""Where data comes from and the layouts a dataset can be in: plain data, no imports. The
schema validates `data.source` and `data.layout` with these; `prepare.layouts` holds one
`Layout` per name (checked when it loads), and the built-in generator writes the layouts it
has a writer for (`prepare.synthetic.WRITERS`)."""

SOURCES: tuple[str, ...] = ("synthetic", "download", "local")
LAYOUTS: tuple[str, ...] = ("voc", "folder", "cityscapes", "coco", "ade20k")
