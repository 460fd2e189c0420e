"""``python -m promptiqa``: the command line (see promptiqa/cli.py)."""
from promptiqa.cli import run

if __name__ == "__main__":
    run()
