"""Train PromptIQA on a mix of IQA datasets (the official command line works unchanged; see --help)."""
import sys

from promptiqa.config import resolve_config
from promptiqa.engine.trainer import TrainingError, launch
from promptiqa.models import BackboneWeightsError

if __name__ == "__main__":
    try:
        launch(resolve_config())
    except (TrainingError, BackboneWeightsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
