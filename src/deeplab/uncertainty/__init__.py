"""How far to trust a prediction, and which images to label next: per-pixel confidence maps
(`confidence`), temperature scaling and calibration error (`calibration`), and the ranking of
an unlabeled pool by the model's uncertainty (`ranking`)."""
