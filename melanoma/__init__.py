"""Melanoma decision support: the library shared by the training pipeline, the CLI and the app.

Importing this package never imports Streamlit, and TensorFlow only where a module needs it.
"""

__version__ = "0.1.0"
