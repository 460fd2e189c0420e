"""``python -m promptiqa.demo``: the embedded demo (see promptiqa/demo/run.py), through the command registry as
``promptiqa demo``, so a missing [demo] extra is the same one line."""
import sys

from promptiqa.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]], prog="python -m promptiqa.demo"))
