"""Process pools and shared-memory blocks: how a GPU actor's helper processes get work and hand back arrays without pickling. Torch-free."""
