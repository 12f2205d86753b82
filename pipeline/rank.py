"""DVC stage rank: see deeplab.stages.rank (what it reads, writes and does)."""

from deeplab.stages import rank, main

main(rank)
