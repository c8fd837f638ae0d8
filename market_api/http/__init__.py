"""HTTP plumbing shared by the routes: the fast path, the cache, negotiation, errors, docs."""
