"""DVC stage pretrain: see deeplab.stages.pretrain (what it reads, writes and does)."""

from deeplab.stages import pretrain, main

if __name__ == "__main__":
    main(pretrain)
