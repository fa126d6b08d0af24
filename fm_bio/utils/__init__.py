"""Small shared helpers (config resolvers, logging set-up)."""
