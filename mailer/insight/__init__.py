"""Knowing the customer: relationship stages and what each customer will likely do next
(repeat purchases, value, churn), computed from the store's paid orders."""
