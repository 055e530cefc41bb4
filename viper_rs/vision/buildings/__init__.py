"""A learned building detector trained by the project on open labelled imagery.

- :mod:`.model`: BuildingNet (small U-Net: background / interior / boundary) and its config.
- :mod:`.checkpoint`: save and strictly load weights; the shipped weights and model card.
- :mod:`.data`: labelled tiles (image + footprints) and training targets, scale augmentation.
- :mod:`.train`: the seeded training loop (``python -m viper_rs train-buildings``).
- :mod:`.instances`: probabilities -> separated building instances.
- :mod:`.detector`: BuildingDetector (the Detector protocol for building concepts).
"""
