"""Pure building blocks every stage uses: errors, clock, money, addresses, the case fold."""
