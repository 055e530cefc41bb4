"""The LLM prompt's text templates and worked examples (installed as ``viper_rs.prompts``)."""
