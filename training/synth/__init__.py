"""``kws-synth``: a cached, seeded corpus of synthetic speech for training and evaluating rejection.

``words`` chooses what is said (common English words, near-misses of every keyword, the Speech
Commands words that are not keywords, short phrases, and the keywords themselves so that "synthetic"
never predicts "not a keyword"); ``voices`` says it with espeak-ng, flite, festival and piper at varied
voice, rate and pitch; ``corpus`` plans, renders and caches the clips with a manifest.
"""
