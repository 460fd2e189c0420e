"""Train PromptIQA on a mix of IQA datasets (the official command line works unchanged; see --help)."""
from promptiqa.engine.trainer import main
from promptiqa.errors import exit_with

if __name__ == "__main__":
    exit_with(main)
