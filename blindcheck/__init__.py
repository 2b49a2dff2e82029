"""blindcheck: can a membership-inference split on speech be told apart without the model?"""

__version__ = "0.1.0"
