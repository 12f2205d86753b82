"""What training reads: class lists, the segmentation dataset and its augmentation, label PNGs."""
