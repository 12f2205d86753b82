"""DVC stage pretrain: see deeplab.stages.pretrain (what it reads, writes and does)."""

from deeplab.stages import pretrain, main

main(pretrain)
