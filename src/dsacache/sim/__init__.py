"""sim/: cache engines and policies replaying a trace's decode memory stream."""
