"""The agent loop (layer 5) and the program around it (layer 3): the executor that answers
tool calls, the places and exports of an answer's regions, and the tool table of docs/tools.md."""

from viper_rs.agent.loop import Agent

__all__ = ["Agent"]
