"""The embedded demo: a synthetic-distortion dataset from scikit-image's photographs, labelled under several
assessment requirements, on which PromptIQA is trained and shown to follow its prompts (``bash scripts/demo.sh``)."""
