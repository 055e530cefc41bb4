"""Layers 0-1: errors, settings, units, words, regions, images, the detector protocol, answers.

Everything here imports nothing of the project above it; every other package builds on it.
"""
