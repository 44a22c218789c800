"""Rollouts: sampling responses from a policy and scoring them (transformers backend)."""
