"""The room runtime: one hub over a room store and a room bus (memory or Redis)."""
