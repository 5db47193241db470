"""The tables of knowing the customer: stage history, predictions, recommendations."""
