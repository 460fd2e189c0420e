"""The web app (``promptiqa app``): a gradio page over the Predictor. Importing this package loads no gradio."""
