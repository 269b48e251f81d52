"""analysis/: access-pattern metrics of a trace."""
