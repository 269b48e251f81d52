"""cli/: the thin `dsacache` command; every command lives in its own module."""
