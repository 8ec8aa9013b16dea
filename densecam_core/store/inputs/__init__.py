"""The input cache: decoded model inputs kept in the store, matched to their files by identity, listed by a catalog, verified."""
