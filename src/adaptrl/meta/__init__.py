"""Gradient-based meta-RL: processed batches, surrogates, adaptation, outer objectives, control
variates, the learner and its configuration."""
