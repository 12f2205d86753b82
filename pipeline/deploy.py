"""DVC stage deploy: see deeplab.stages.deploy (what it reads, writes and does)."""

from deeplab.stages import deploy, main

main(deploy)
