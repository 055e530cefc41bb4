"""Gradio chat UI: ask about an image, see the answer, the program and the regions."""
