"""DVC stage register: see deeplab.stages.register (what it reads, writes and does)."""

from deeplab.stages import register, main

if __name__ == "__main__":
    main(register)
