"""viper-rs: zero-shot visual question answering for aerial and satellite imagery."""

__version__ = "0.1.0"
