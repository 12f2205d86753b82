"""DVC stage evaluate: see deeplab.stages.evaluate (what it reads, writes and does)."""

from deeplab.stages import evaluate, main

if __name__ == "__main__":
    main(evaluate)
