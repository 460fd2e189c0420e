"""``python -m promptiqa.demo``: the embedded demo (see promptiqa/demo/run.py)."""
import sys

from promptiqa.demo.run import main

if __name__ == "__main__":
    sys.exit(main())
