"""Train: the axolotl config, run planning and summaries, MLflow tracking."""
