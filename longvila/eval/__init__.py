"""Evaluation: passkey retrieval (stage 4); video needle-in-a-haystack and benchmark suites come later."""
