"""Gradio chat UI: ask about an image, see the answer, the program and the regions.

``python app.py`` serves it on http://127.0.0.1:7860 with a demo scene selected;
``python app.py --help`` lists the options.
"""

from __future__ import annotations

from pathlib import Path

from viper_rs.ui.app import main

if __name__ == "__main__":
    main(repo=Path(__file__).resolve().parent)
