"""``kws-loadtest``: open-loop (Poisson) and closed-loop load against a running keyword service."""
