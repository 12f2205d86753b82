"""Datasets: synthetic generator, downloads, COCO/VOC/SBD preprocessing, training loader."""
