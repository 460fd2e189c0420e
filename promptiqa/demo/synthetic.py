"""The demo's dataset command, kept where the docs name it: ``python -m promptiqa.demo.synthetic`` runs
``promptiqa.data.synthetic`` (the distortion library and dataset generator, which the web app shares)."""
from promptiqa.data.synthetic import *  # noqa: F401,F403  (the names older imports of this module used)
from promptiqa.data.synthetic import main

if __name__ == "__main__":
    main()
