"""Training: tasks (standard, PGD, TRADES, LLR), the LLR regularizer, the loop."""
