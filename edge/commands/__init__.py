"""`emostream` subcommands owned by the edge runtime."""
