"""Tests of corral.models: the OpenAI and Anthropic clients, the registry, the scripted model."""
