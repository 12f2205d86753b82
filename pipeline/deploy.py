"""DVC stage deploy: see deeplab.stages.deploy (what it reads, writes and does)."""

from deeplab.stages import deploy, main

if __name__ == "__main__":
    main(deploy)
