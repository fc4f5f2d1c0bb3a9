"""Curate: filters, the context window, the prompt and the chat dataset."""
