"""Gradio chat UI (placeholder until the UI issue lands): ask about an image, see the answer."""

from __future__ import annotations


def main() -> None:
    """Launch the app."""
    raise SystemExit(
        "The chat UI is not built yet; use `python -m viper_rs ask IMAGE \"QUESTION\"` "
        "or `python -m viper_rs demo`."
    )


if __name__ == "__main__":
    main()
