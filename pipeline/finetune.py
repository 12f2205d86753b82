"""DVC stages finetune and variant@<name> (`--variant <name>`): see deeplab.stages.finetune
(what it reads, writes and does)."""

from deeplab.stages import finetune, main

if __name__ == "__main__":
    main(finetune)
