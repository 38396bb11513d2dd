"""The `jobq demo` command and what it needs."""
