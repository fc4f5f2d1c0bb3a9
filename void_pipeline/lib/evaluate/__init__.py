"""Evaluate: held-out generations through a real server, voice metrics, authorship, gates."""
