"""``kws-robustness``: how the served model answers input it has not seen (levels, noise, words, sounds)."""
