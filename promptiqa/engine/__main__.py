"""``python -m promptiqa.engine``: train.py's training, for installs that have no checkout (the demo launches it)."""
from promptiqa.engine.trainer import main
from promptiqa.errors import exit_with

if __name__ == "__main__":
    exit_with(main)
