"""DVC stage rank: see deeplab.stages.rank (what it reads, writes and does)."""

from deeplab.stages import rank, main

if __name__ == "__main__":
    main(rank)
