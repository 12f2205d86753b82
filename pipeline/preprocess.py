"""DVC stage preprocess: see deeplab.stages.preprocess (what it reads, writes and does)."""

from deeplab.stages import preprocess, main

if __name__ == "__main__":
    main(preprocess)
