"""Framework adapters. Each imports its framework lazily; nothing here is imported by ``import agent_coherence``."""
