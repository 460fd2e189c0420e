"""Train PromptIQA on a mix of IQA datasets (the official command line works unchanged; see --help).

The same as ``python -m promptiqa train``.
"""
from promptiqa.cli import script

if __name__ == "__main__":
    script("train")
