"""DVC stage fetch: see deeplab.stages.fetch (what it reads, writes and does)."""

from deeplab.stages import fetch, main

if __name__ == "__main__":
    main(fetch)
