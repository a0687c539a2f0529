"""The LM layer: backends (openai, local, ...) behind one facade with the paper's interface."""
