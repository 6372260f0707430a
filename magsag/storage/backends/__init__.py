"""Documented import paths of the built-in hot stores."""
